"""Trained models in MLflow's model registry: stage=train logs and registers its model as
vqi-<experiment>-<tag>, and stage=serve serves it by name and version, loaded through MLflow."""
from __future__ import annotations

import io
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from processed_factory import write_processed

from vqi import model_registry, tracking
from vqi.classes import CLASS_NAMES
from vqi.models.checkpoint import load_model
from vqi.stages import retrain as retrain_stage
from vqi.stages import train as train_stage
from vqi.stages.serve import build_app, registry_entries

TRAIN = ["model=deeplabv3_mobilenet_v3_large", "data.image_size=64", "train.batch_size=4", "train.num_workers=0",
         "train.progress=false", "train.epochs=1", "train.eval_untrained=false"]


def test_a_model_uri_names_a_registered_name_and_version():
    assert model_registry.parse_model_uri("models:/vqi-demo-baseline/12") == ("vqi-demo-baseline", "12")
    for wrong in ("models:/vqi-demo-baseline", "models:/vqi-demo-baseline@champion", "runs:/abc/model",
                  "vqi-demo-baseline/1", "models:/vqi-demo-baseline/latest"):
        with pytest.raises(ValueError, match="expected a registered model as models:/<name>/<version>"):
            model_registry.parse_model_uri(wrong)
    assert model_registry.registered_name("demo", "enhanced") == "vqi-demo-enhanced"


def test_serving_a_model_the_store_lacks_names_it_and_the_store(make_cfg):
    cfg = make_cfg("serve.discover=false", "serve.model=models:/vqi-demo-baseline/3", stage="serve")
    tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with pytest.raises(model_registry.RegisteredModelNotFound) as err:
        registry_entries(cfg)
    assert str(err.value) == (f"models:/vqi-demo-baseline/3: no version 3 of registered model 'vqi-demo-baseline' "
                              f"in the tracking store {cfg.tracking.uri} (it has no registered model "
                              "'vqi-demo-baseline')")


@pytest.mark.slow
def test_a_trained_model_is_registered_and_served_by_name_and_version(make_cfg, tmp_path):
    processed = write_processed(tmp_path / "processed", {"train": 4, "val": 2, "test": 2, "train_augmented": 4}, size=64)
    cfg = make_cfg(*TRAIN, f"data.processed_dir={processed}", "test.overlays=0", stage="train")
    experiment = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    client = MlflowClient(cfg.tracking.uri)
    for stage, name in ((train_stage, "vqi-demo-baseline"), (retrain_stage, "vqi-demo-enhanced")):
        with mlflow.start_run(experiment_id=experiment) as run:
            stage.run(cfg)
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert int(version.version) == 1 and version.run_id == run.info.run_id
        assert client.get_run(run.info.run_id).data.tags["registered_model"] == f"models:/{name}/1"
    logged = Model.load(mlflow.artifacts.download_artifacts("models:/vqi-demo-baseline/1", dst_path=str(tmp_path / "m")))
    assert logged.metadata["class_names"] == list(CLASS_NAMES) and logged.metadata["image_size"] == 64
    assert logged.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 3, 64, 64)}
    assert logged.saved_input_example_info["type"] == "ndarray"

    best = Path(cfg.train.checkpoint_dir) / "best.pt"
    served = make_cfg("serve.discover=false", f"data.processed_dir={processed}", f"+serve.checkpoints.best={best}",
                      "serve.model=models:/vqi-demo-baseline/1", stage="serve")
    app = build_app(served)[0].test_client()
    assert app.get("/api/models").get_json()["models"] == ["best", "vqi-demo-baseline-v1"]
    image = (processed / "images" / "val" / "val_000.png").read_bytes()
    answers = {}
    for model in ("best", "vqi-demo-baseline-v1"):
        response = app.post("/api/analyze", content_type="multipart/form-data",
                            data={"model": model, "method": "gradcam", "image": (io.BytesIO(image), "val_000.png")})
        assert response.status_code == 200, response.get_data(as_text=True)
        answers[model] = response.get_json()
    registered, checkpoint = answers["vqi-demo-baseline-v1"], answers["best"]
    assert registered["areas"] == checkpoint["areas"]
    assert registered["overlays"]["segmentation"] == checkpoint["overlays"]["segmentation"]
    model, fields = model_registry.load_registered("models:/vqi-demo-baseline/1", cfg.tracking.uri)
    weights, want = model.state_dict(), load_model(best)[0].state_dict()
    assert weights.keys() == want.keys() and all(torch.equal(weights[k], want[k]) for k in want)  # best.pt's
    assert fields["class_names"] == list(CLASS_NAMES) and fields["config"]["data"]["image_size"] == 64

    absent = make_cfg("serve.discover=false", "serve.model=models:/vqi-demo-baseline/2", stage="serve")
    with pytest.raises(model_registry.RegisteredModelNotFound, match=r"no version 2 .* holds versions 1 of"):
        build_app(absent)
