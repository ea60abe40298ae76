"""The known-truth study: annotation quality against generated truth, the simulated expert,
rankers of proposals for a review budget, budget curves and the study's tables (docs/study.md)."""
