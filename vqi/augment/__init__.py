"""Expert-guided annotation augmentation: proposals from explanations, review, application."""
