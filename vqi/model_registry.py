"""Trained models in MLflow's model registry: logged with `mlflow.pytorch.log_model`, registered as
`vqi-<experiment_name>-<train.tag>` (vqi-demo-baseline, vqi-demo-enhanced), loaded back by name
and version (`models:/vqi-demo-baseline/1`).

Only stages import this (as `vqi.tracking`); library code stays free of MLflow.

The logged model is `SegmentationLogits(model)` saved in MLflow's default "pt2" format
(torch.export: a traced graph that loads without unpickling code, which MLflow 3 refuses by
default), so `mlflow models serve -m models:/<name>/<version>` answers logits for an image batch.
The MLmodel file's metadata holds what using it needs: class names, image size, the model's build
arguments and its CAM target layer. An exported graph runs as one flat module, which leaves a CAM
method no layer to hook, so `load_registered` rebuilds the torchvision model from those build
arguments and loads the graph's weights into it.
"""
from __future__ import annotations

import re
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence

import mlflow
import mlflow.artifacts
import mlflow.pytorch
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from torch import nn

from vqi.export.formats import SegmentationLogits
from vqi.models.checkpoint import CheckpointError, load_model
from vqi.models.factory import build_model

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")
WRAPPED = "model."
"""Prefix of the segmentation model's weights inside `SegmentationLogits` (its attribute)."""
EXAMPLE_IMAGES = 2
"""Images in the input example: torch.export fixes a dimension of size 1, so two keep the batch free."""


class RegisteredModelNotFound(LookupError):
    """A `models:/<name>/<version>` that the tracking store does not hold."""


def registered_name(experiment_name: str, tag: str) -> str:
    """The registry name of a training: `vqi-demo-baseline`, `vqi-paper-enhanced`, ..."""
    return f"vqi-{experiment_name}-{tag}"


def parse_model_uri(uri: str) -> tuple[str, str]:
    """(name, version) of `models:/<name>/<version>`; ValueError for anything else."""
    match = MODEL_URI.match(str(uri))
    if match is None:
        raise ValueError(f"{uri!r}: expected a registered model as models:/<name>/<version>, "
                         "e.g. models:/vqi-demo-baseline/1")
    return match["name"], match["version"]


def example_images(dataset: Sequence) -> np.ndarray:
    """The first `EXAMPLE_IMAGES` images of a dataset of `(image, ...)` items (repeated when it
    has fewer), as the model sees them: float32 (N, 3, H, W). Rounded to 4 decimals, finer than an
    8-bit pixel's step once normalised (~0.017), which keeps MLflow's JSON copies of it half as long."""
    images = torch.stack([dataset[i % len(dataset)][0] for i in range(EXAMPLE_IMAGES)]).numpy()
    return images.round(4)


def log_trained_model(checkpoint: str | Path, name: str, example: np.ndarray) -> str:
    """Log the model of `checkpoint` (best.pt) to the active run with a signature and `example`
    (real images at the model's input size) as its input example, register it as `name`, and
    return its `models:/<name>/<version>` (also the run's tag `registered_model`)."""
    model, ckpt = load_model(checkpoint)
    size = tuple(example.shape[-2:])
    classes = list(ckpt["class_names"])
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, *size))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes), *size))]))
    target_layer = ((ckpt.get("config") or {}).get("model") or {}).get("target_layer")
    metadata = {"class_names": classes, "image_size": int(size[-1]), "target_layer": target_layer,
                "model_config": dict(ckpt["model_config"])}
    info = mlflow.pytorch.log_model(SegmentationLogits(model).eval(), name=name, signature=signature,
                                    input_example=example, metadata=metadata, registered_model_name=name,
                                    serialization_format="pt2", pip_requirements=[f"torch=={version('torch')}"])
    uri = f"models:/{name}/{info.registered_model_version}"
    mlflow.set_tag("registered_model", uri)
    return uri


def find_version(uri: str, tracking_uri: str):
    """The model version `uri` names in the store at `tracking_uri`; `RegisteredModelNotFound`
    naming both (and the versions the store does hold under that name) when there is none."""
    name, number = parse_model_uri(uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        return client.get_model_version(name, number)
    except MlflowException:
        held = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        there = (f"it holds versions {', '.join(map(str, held))} of {name!r}" if held
                 else f"it has no registered model {name!r}")
        raise RegisteredModelNotFound(f"{uri}: no version {number} of registered model {name!r} in the "
                                      f"tracking store {tracking_uri} ({there})") from None


def load_registered(uri: str, tracking_uri: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """`(model.eval(), checkpoint fields)` of the registered model `uri`, loaded through MLflow:
    the fields `class_names`, `model_config` and `config` (data.image_size, model.target_layer)
    that a best.pt holds, so a served registered model is used as a checkpoint is.

    Raises `CheckpointError` (which the app answers as a checkpoint it cannot load) when the store
    lacks it, its files cannot be read (a store moved after it was logged) or do not fit its
    metadata; `find_version` says which versions there are."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri,
                                                        registry_uri=tracking_uri)
            graph = mlflow.pytorch.load_model(local)
            metadata = Model.load(local).metadata or {}
        except (MlflowException, OSError) as err:
            raise CheckpointError(f"{uri} (tracking store {tracking_uri}) cannot be loaded: {err}") from err
    missing = [k for k in ("class_names", "model_config", "image_size") if k not in metadata]
    if missing:
        raise CheckpointError(f"{uri}: its MLmodel metadata lacks {', '.join(missing)}; not logged by vqi?")
    model = build_model(**{**metadata["model_config"], "weights": None, "weights_backbone": None})
    weights = {k[len(WRAPPED):]: v for k, v in graph.state_dict().items() if k.startswith(WRAPPED)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{uri}: its weights do not fit model_config {metadata['model_config']}: {err}") from err
    fields = {"class_names": list(metadata["class_names"]), "model_config": metadata["model_config"],
              "config": {"data": {"image_size": metadata["image_size"]},
                         "model": {"target_layer": metadata.get("target_layer")}}}
    return model.to(device).eval(), fields
