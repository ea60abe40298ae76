"""The training engine: epoch loops, the confusion matrix, and distributed helpers."""
