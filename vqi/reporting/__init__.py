"""Tables and figures built from stage outputs (library code: no Hydra, no MLflow)."""
