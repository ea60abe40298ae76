"""Plausibility and faithfulness of explanation maps (shared/spec/xai-metrics.md); library code."""
