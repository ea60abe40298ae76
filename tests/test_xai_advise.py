"""ADVISE: the relevance of channels with known value clusters, the group a hand-built model's
class depends on, the KDE's parts against independent computations, and a real model by config."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde, norm
from torch import nn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
from xai_factory import xai_setup

from vqi import tracking
from vqi.stages import evaluate, explain, report
from vqi.config import build_cam
from vqi.xai.adaptive_kde import balloon, count_peaks, fft_smooth, histogram, variable_density
from vqi.xai.advise import AdviseCAM
from vqi.xai.base import gradient_maps
from vqi.xai.gradcam import GradCAM
from vqi.xai.hirescam import HiResCAM
from vqi.xai.targets import Unit

SIDE = 16
TOP_LEFT = torch.zeros(SIDE, SIDE, dtype=torch.bool)
TOP_LEFT[:8, :8] = True
BOTTOM_RIGHT = torch.zeros(SIDE, SIDE, dtype=torch.bool)
BOTTOM_RIGHT[8:, 8:] = True


def _quadrants(levels: list[float], spread: float = 0.03) -> torch.Tensor:
    """A 16 x 16 channel whose quadrants (top-left, top-right, bottom-left, bottom-right) hold
    `levels`, each spread as the 64 quantiles of a normal of sd `spread` (a value cluster per level)."""
    quantiles = spread * torch.special.ndtri((torch.arange(64, dtype=torch.float64) + 0.5) / 64)
    grid = torch.tensor(levels, dtype=torch.float64).view(2, 2).repeat_interleave(8, 0).repeat_interleave(8, 1)
    return grid + quantiles.view(8, 8).repeat(2, 2)


def _channels() -> torch.Tensor:
    """1 x 4 x 16 x 16: two channels of two clusters, high in the top-left quadrant; one of three,
    high in the bottom-right; one dead (constant)."""
    return torch.stack([_quadrants([.8, .2, .2, .2]), _quadrants([.9, .3, .3, .3]),
                        _quadrants([.1, .5, .1, .9]), torch.zeros(SIDE, SIDE, dtype=torch.float64)])[None]


def _probe_model() -> nn.Module:
    """Features = the input (the target layer); class 1's logit = A0 + A1 + 1.8 A2, class 2's = A2.

    For class 1 over the top-left quadrant, the Grad-CAM terms w_k sum_hw A_k of the two-cluster
    channels add up to 51.2, A2's to 46.1, yet A2's weight makes plain Grad-CAM peak bottom right."""
    head = nn.Conv2d(4, 3, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0, 0, 0, 0], [1, 1, 1.8, 0], [0, 0, 1, 0]], dtype=torch.float32)[..., None, None])
    return nn.Sequential(OrderedDict(features=nn.Identity(), head=head)).eval()


def _relevance(cam: AdviseCAM, acts: torch.Tensor, grads: torch.Tensor | None = None) -> list[int]:
    return cam.relevance(acts.float(), (acts if grads is None else grads).float())[0].tolist()


def test_relevance_is_the_peak_count_of_each_channel_at_any_scale():
    cam, acts = AdviseCAM(_probe_model(), "features"), _channels()
    assert _relevance(cam, acts) == [2, 2, 3, 0]
    assert _relevance(cam, 3 * acts - 1) == [2, 2, 3, 0]      # minmax: an affine change of the layer changes nothing
    assert _relevance(cam, torch.rand(1, 3, 1, 1)) == [0, 0, 0]  # a 1 x 1 layer: no density, no peak


def test_advise_keeps_the_group_that_carries_the_class_and_maps_its_region():
    model, images = _probe_model(), _channels().float()
    units = [Unit(0, 1, TOP_LEFT), Unit(0, 2, BOTTOM_RIGHT)]
    cam = AdviseCAM(model, "features")
    acts, grads = cam.activations_and_grads(images, units)
    kept = cam.channel_weights(acts, grads) != 0
    assert kept.tolist() == [[True, True, False, False], [False, False, True, False]]
    maps = cam(images, units)
    assert maps.shape == (2, SIDE, SIDE)
    assert float(maps[0][TOP_LEFT].min()) > float(maps[0][~TOP_LEFT].max())
    assert float(maps[0][TOP_LEFT].mean()) > 5 * float(maps[0][~TOP_LEFT].mean())
    assert float(maps[1][BOTTOM_RIGHT].min()) > float(maps[1][~BOTTOM_RIGHT].max())
    plain = GradCAM(model, "features")(images, units[:1])[0]     # every channel: the other quadrant wins
    assert bool(BOTTOM_RIGHT.flatten()[plain.flatten().argmax()])


def test_density_of_gradients_scores_the_gradients_not_the_activations():
    acts, other = _channels(), _channels()[:, [2, 3, 0, 1]]
    by_grads = AdviseCAM(_probe_model(), "features", density_of="gradients")
    assert _relevance(by_grads, acts, other) == [3, 0, 2, 2]


def test_clip_counts_only_the_values_in_the_unit_interval():
    acts = torch.stack([_quadrants([.8, .2, .2, 1.7]), _quadrants([.8, .2, .2, -.9]), _quadrants([.8, .2, .2, .5])])[None]
    assert _relevance(AdviseCAM(_probe_model(), "features", domain="clip"), acts) == [2, 2, 3]
    assert _relevance(AdviseCAM(_probe_model(), "features", domain="minmax"), acts) == [3, 3, 3]


def test_balloon_with_one_width_is_scipys_gaussian_kde_and_every_value_is_counted():
    grid = torch.linspace(0, 1, 41, dtype=torch.float64)
    dt = float(grid[1] - grid[0])
    rng = np.random.default_rng(0)
    values = grid[torch.from_numpy(rng.integers(0, 41, size=(3, 30)))]   # on grid points: binning is exact
    values[:, 0] = 1.0                                                    # the top half bin counts too
    hist = histogram(values, torch.ones_like(values, dtype=torch.bool), grid, dt)
    assert (hist.sum(dim=1) * dt).tolist() == [30.0, 30.0, 30.0]
    width = 0.07
    ours = balloon(hist, grid, dt, torch.full_like(hist, width)) / 30
    for row, sample in zip(ours, values.numpy()):
        reference = gaussian_kde(sample, bw_method=width / sample.std(ddof=1))(grid.numpy())
        np.testing.assert_allclose(row.numpy(), reference, rtol=1e-10)


def test_variable_bandwidth_density_and_cost_follow_eqs_7_and_8_point_by_point():
    rng = np.random.default_rng(3)
    grid = torch.linspace(0, 1, 15, dtype=torch.float64)
    dt = float(grid[1])
    windows = torch.tensor([0.05, 0.1, 0.2, 0.4], dtype=torch.float64)
    hist = torch.from_numpy(rng.integers(0, 4, size=(3, 15)) / dt)
    local = windows[torch.from_numpy(rng.integers(0, 4, size=(3, 4, 15)))]   # optimal width per window and point
    gamma = torch.tensor([0.3, 1e-3, 10.0], dtype=torch.float64)             # between the ratios, below all, above all
    cost, density = variable_density(hist, grid, dt, windows, local, gamma)
    t, w = grid.numpy(), windows.numpy()
    for b in range(3):
        h, g = hist[b].numpy(), float(gamma[b])
        fixed = []
        for k in range(15):
            ratio = local[b, :, k].numpy() / w
            fixed.append(w.min() if g > ratio.max() else w.max() if g < ratio.min()
                         else g * w[max(i for i in range(4) if ratio[i] >= g)])
        fixed = np.array(fixed)
        width = np.array([np.sum(fixed * norm.pdf(tk - t, scale=fixed / g)) / np.sum(norm.pdf(tk - t, scale=fixed / g))
                          for tk in t])
        rate = np.array([np.sum(h * dt * norm.pdf(tk - t, scale=width[k])) for k, tk in enumerate(t)])
        rate *= h.sum() / rate.sum()
        expected_cost = np.sum((rate ** 2 - 2 * rate * h + 2 * h / (np.sqrt(2 * np.pi) * width)) * dt)
        np.testing.assert_allclose(density[b].numpy(), rate, rtol=1e-10)
        assert float(cost[b]) == pytest.approx(expected_cost, rel=1e-10)


def test_fft_smoothing_is_a_circular_convolution_with_a_sampled_gauss():
    rows = torch.from_numpy(np.random.default_rng(1).random((2, 30)))
    width = 2.5
    n = 2 ** int(np.ceil(np.log2(30 + 3 * width)))          # the zero-padded length it convolves over
    lags = np.arange(n)[:, None] - np.arange(30)[None, :]
    # the Gauss kernel's spectrum, sampled on n frequencies, is the n-periodic sum of the sampled Gauss
    kernel = sum(np.exp(-(lags + r * n) ** 2 / (2 * width ** 2)) for r in range(-3, 4)) / (np.sqrt(2 * np.pi) * width)
    np.testing.assert_allclose(fft_smooth(rows, width).numpy(), (kernel[:30] @ rows.numpy().T).T, atol=1e-12)


def test_peak_count_is_scipys_with_flat_tops_and_ends():
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 4, size=(200, 12)).astype(np.float64)     # many ties: flat tops and flat ends
    expected = [len(find_peaks(r)[0]) for r in rows]
    assert count_peaks(torch.from_numpy(rows)).tolist() == expected
    assert count_peaks(torch.tensor([[0.0, 2, 2, 1], [0, 1, 1, 1], [1, 1, 0, 1]])).tolist() == [1, 0, 0]
    rounding, small = [0, 1, 1 + 4e-16, 1, 1], [2, 0, 1e-9, 0, 2]       # a bump at rounding level is flat
    assert count_peaks(torch.tensor([rounding, small], dtype=torch.float64)).tolist() == [0, 1]


def _mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()


def test_a_real_model_from_config_gives_maps_in_unit_range_and_shares_the_gradient_pass(make_cfg):
    model, images = _mobilenet(), torch.randn(2, 3, 64, 64)
    top = torch.zeros(64, 64, dtype=torch.bool)
    top[:32] = True
    units = [Unit(0, 1, top), Unit(0, 3, ~top), Unit(1, 2, torch.ones(64, 64, dtype=torch.bool))]
    overrides = ("model=deeplabv3_mobilenet_v3_large", "model.output_stride=16", "xai=advise")
    cam = build_cam(make_cfg(*overrides), model)
    assert isinstance(cam, AdviseCAM) and cam.name == "advise"
    maps = cam(images, units)
    assert maps.shape == (3, 64, 64) and torch.isfinite(maps).all()
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert all(float(m.max()) > 0.99 for m in maps)   # each unit keeps a group with some positive evidence
    shared = gradient_maps([HiResCAM(model, cam.layer), cam], images, units)
    torch.testing.assert_close(shared["advise"], maps)
    with pytest.raises(ValueError, match="engine=fast"):
        build_cam(make_cfg(*overrides, "xai.engine=library"), model)


@pytest.mark.parametrize("setting, message", [
    ({"density_of": "logits"}, "xai.method.density_of"),
    ({"domain": "zscore"}, "xai.method.domain"),
    ({"bandwidths": 1}, "xai.method.bandwidths"),
])
def test_wrong_settings_name_their_key(setting, message):
    with pytest.raises(ValueError, match=message):
        AdviseCAM(_probe_model(), "features", **setting)


@pytest.mark.slow
def test_explain_evaluate_and_report_take_advise_as_a_table_row(make_cfg, tmp_path):
    overrides = [*xai_setup(tmp_path), "xai=advise", "xai.figures=0", "xai_methods=[hirescam,advise]"]
    for stage, module in (("explain", explain), ("evaluate", evaluate), ("report", report)):
        cfg = make_cfg(*overrides, stage=stage)
        experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}-advise"):
            mlflow.set_tag("stage", stage)
            out = module.run(cfg)
        assert stage != "explain" or out["units"] > 0
    table = (Path(cfg.paths.tables_dir) / "table1.md").read_text()
    assert "| ADVISE |" in table and "Not evaluated for this checkpoint: hirescam" in table
