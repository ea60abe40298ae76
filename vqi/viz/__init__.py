"""Figures: class colours, mask overlays and preview grids every stage reuses (matplotlib, Agg)."""
