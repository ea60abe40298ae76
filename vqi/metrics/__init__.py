"""Plausibility and faithfulness of explanation maps (docs/metrics.md); library code."""
