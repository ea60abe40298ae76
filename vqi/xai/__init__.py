"""CAM explanations of segmentation models (library code: no Hydra, no MLflow).

`xai.engine=fast` (default): `base.GradientCAM` subclasses and `scorecam.ScoreCAM`, every unit of
a batch from one forward pass. `xai.engine=library`: `library.LibraryCAM`, pytorch-grad-cam itself.
"""
