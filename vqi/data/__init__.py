"""Datasets: reading labelme/COCO sources, converting to COCO, rasterising masks, splits,
the generated TTPLA-like dataset, and the prepared folder other stages read.

Every reader yields `Sample`s (an image plus polygons in source pixels); everything after that
is format-independent.
"""
