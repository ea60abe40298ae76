"""The model-randomisation sanity check: Spearman, SSIM and the cascade against independent
computations, undefined correlations reported as such, and stage=sanity end to end."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
from xai_factory import xai_setup

from vqi import tracking
from vqi.metrics import sanity
from vqi.stages import sanity as sanity_stage


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent: Wang et al. with scipy's Gaussian filter (sigma 1.5, radius 5), border of 5 cropped."""
    f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)      # noqa: E731
    mx, my = f(a), f(b)
    vx, vy, cov = f(a * a) - mx ** 2, f(b * b) - my ** 2, f(a * b) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_spearman_is_the_pearson_correlation_of_average_ranks_unit_by_unit():
    rng = np.random.default_rng(0)
    a = rng.random((4, 16, 16))
    b = np.round(a + 0.3 * rng.random((4, 16, 16)), 1)        # many ties
    b[3] = rng.random((16, 16))                                # unit 3 unrelated: rows must be paired, not pooled
    expected = [np.corrcoef(stats.rankdata(x.ravel()), stats.rankdata(y.ravel()))[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(sanity.spearman(a, b), expected, atol=1e-12)
    assert sanity.spearman(a[:1], a[:1])[0] == pytest.approx(1.0)
    assert sanity.spearman(a[:1], -a[:1])[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        sanity.spearman(a, b[:3])


def test_spearman_of_a_constant_map_is_nan_without_a_warning():
    a = np.random.default_rng(2).random((3, 16, 16))
    const = np.zeros((3, 16, 16))
    const[2] = a[2]                                            # the one unit with two rankings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # scipy's ConstantInputWarning would fail here
        rho = sanity.spearman(a, const)
        both_constant = sanity.spearman(const[:2], const[:2])
    assert np.isnan(rho[:2]).all() and rho[2] == pytest.approx(1.0)
    assert np.isnan(both_constant).all()


def test_ssim_equals_the_reference_and_is_one_for_identical_maps():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 24, 20)), rng.random((3, 24, 20))
    b[0] = a[0]
    out = sanity.ssim(a, b)
    np.testing.assert_allclose(out, [_ssim_reference(x, y) for x, y in zip(a, b)], atol=1e-10)
    assert out[0] == pytest.approx(1.0)
    assert np.isfinite(sanity.ssim(np.zeros((1, 16, 16)), np.zeros((1, 16, 16)))).all()


def test_summary_reports_undefined_as_nan_with_a_count_never_as_a_number():
    rho = np.array([0.5, -0.1, np.nan])
    out = sanity.summarise(rho, np.array([0.2, 0.4, 0.6]))
    assert out["rho"] == pytest.approx(0.2) and out["abs_rho"] == pytest.approx(0.3)
    assert out["undefined"] == 1 and out["units"] == 3 and out["ssim"] == pytest.approx(0.4)
    every = sanity.summarise(sanity.spearman(np.ones((2, 12, 12)), np.random.rand(2, 12, 12)), np.ones(2))
    assert np.isnan(every["rho"]) and np.isnan(every["abs_rho"]) and every["undefined"] == 2


def test_cascade_goes_from_the_head_down_and_randomises_only_its_modules_reproducibly():
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()
    steps = sanity.cascade_steps(model)
    assert [s for s, _ in steps][:4] == ["classifier", "aspp", "backbone.16", "backbone.15"]
    assert steps[-1][0] == "backbone.0" and len(steps) == 19
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    sanity.randomise(steps[1][1], seed=3)                      # ASPP only
    assert torch.equal(state, torch.random.get_rng_state())   # the global RNG is untouched
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("classifier.0.") for k in changed)
    again = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()
    sanity.randomise(sanity.cascade_steps(again)[1][1], seed=3)
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in changed)


def test_sanity_stage_writes_table_figure_and_final_metrics(make_cfg, tmp_path):
    cfg = make_cfg(*xai_setup(tmp_path, size=40), "sanity.methods=[gradcam,random_cam]", "sanity.max_images=2",
                   stage="sanity")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        out = sanity_stage.run(cfg)
    saved = json.loads((Path(cfg.sanity.output_dir) / "sanity.json").read_text())
    assert saved["steps"][0] == "classifier" and len(saved["methods"]["gradcam"]) == 19
    assert out["units"] == saved["units"] > 0
    for n in ("gradcam", "random_cam"):
        final = saved["methods"][n][-1]
        assert out[f"undefined/{n}"] == final["undefined"]
        assert (np.isnan(final["rho"]) and np.isnan(out[f"final_rho/{n}"])) or \
            out[f"final_rho/{n}"] == pytest.approx(final["rho"])
    md = (Path(cfg.paths.tables_dir) / "sanity.md").read_text()
    assert "| GradCAM @ classifier |" in md and "| Random-CAM @ backbone.0 |" in md and "cpu" in md
    assert (Path(cfg.sanity.figures_dir) / "sanity_rho.png").is_file()
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "ssim/gradcam")
    assert [m.step for m in history] == list(range(19))
