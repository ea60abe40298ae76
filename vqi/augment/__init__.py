"""Annotation proposals from explanations (regions, enlargements, unlabelled regions); their review is `vqi.review`."""
