"""vqi's metrics against Quantus 0.6.0 (issue 23), on cases where the two definitions coincide.

Each test states the settings that make them coincide and what still differs (docs/metrics.md,
"Cross-checks against Quantus"). Quantus's scores are fractions; vqi's are in %.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import quantus
import torch
from scipy import ndimage
from torch import nn

from vqi.metrics import deletion, plausibility, pointing, sanity
from vqi.xai.gradcam import GradCAM
from vqi.xai.targets import Unit, model_logits

SIZE = 16


class TinySegmenter(nn.Module):
    """A random-weight dense classifier named like torchvision's DeepLabv3 (`backbone`, then
    `classifier`), so vqi's cascade accepts it, with one layer per backbone block: one vqi
    cascade step is then one Quantus layer. Small enough for one forward per deleted pixel."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 8, 3, padding=1), relu2=nn.ReLU()))
        self.classifier = nn.Conv2d(8, classes, 1)
        with torch.no_grad():       # "trained" statistics: re-initialising the norm must change the model
            self.backbone.bn1.running_mean.uniform_(-0.5, 0.5)
            self.backbone.bn1.running_var.uniform_(0.5, 2.0)
            self.backbone.bn1.weight.uniform_(0.5, 1.5)
            self.backbone.bn1.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.classifier(self.backbone(x))}


class TargetConfidence(nn.Module):
    """The segmenter seen as a classifier for Quantus: output n, c = conf_c of image n, the
    mean over the fixed target mask T of softmax(f(x))_c, as vqi's deletion curve scores it."""

    def __init__(self, model: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.model, self.mask = model, mask.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(model_logits(self.model, x), dim=1)
        return (probs * self.mask).sum(dim=(2, 3)) / self.mask.sum()


def _model() -> TinySegmenter:
    """The same random weights at every call."""
    torch.manual_seed(0)
    return TinySegmenter().eval()


def _disk_dilation(masks: np.ndarray, radius: float) -> np.ndarray:
    """Every pixel within `radius` px (Euclidean) of the mask, image by image."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = dy ** 2 + dx ** 2 <= radius ** 2
    return np.stack([ndimage.binary_dilation(m, structure=disk) for m in masks])


def _cables(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` H x W masks, each one 1-px line (a thin object) at a random row, random extent."""
    masks = np.zeros((count, 24, 24), dtype=bool)
    for m in masks:
        start = rng.integers(0, 12)
        m[rng.integers(0, 24), start:start + rng.integers(4, 12)] = True
    return masks


@pytest.mark.parametrize("radius", [0.0, 3.0])
def test_pointing_game_equals_quantus_on_the_ground_truth_grown_by_the_radius(radius):
    """Coincide: unique maxima (continuous random maps), and Quantus's mask = G_c dilated by the
    disk of radius r (vqi's "within r px of G_c"); r = 0 is Quantus's plain game on G_c.
    Differ: on a tie for the maximum Quantus hits if any tied pixel is on target, vqi looks at
    the first in raster order; Quantus has no radius."""
    rng = np.random.default_rng(0)
    maps, gt = rng.random((60, 24, 24)), _cables(60, rng)
    ours = pointing.hits(maps, gt, radius=radius)
    theirs = quantus.PointingGame(disable_warnings=True)(
        model=None, x_batch=np.zeros((60, 3, 24, 24)), y_batch=np.zeros(60, dtype=int), a_batch=maps,
        s_batch=_disk_dilation(gt, radius)[:, None], channel_first=True)
    assert 0 < ours.sum() < 100 * 60                      # hits and misses both
    np.testing.assert_array_equal(ours, 100.0 * np.asarray(theirs, dtype=float))

    tie = np.zeros((1, 24, 24))
    tie[0, 0, 0] = tie[0, 20, 20] = 1.0                   # first maximum off target, second on it
    on_second = np.zeros((1, 24, 24), dtype=bool)
    on_second[0, 20, 20] = True
    assert pointing.hits(tie, on_second, radius=0.0)[0] == 0.0
    assert quantus.PointingGame(disable_warnings=True)(
        model=None, x_batch=np.zeros((1, 3, 24, 24)), y_batch=np.zeros(1, dtype=int), a_batch=tie,
        s_batch=on_second[:, None], channel_first=True)[0]


def test_ebpg_equals_quantus_relevance_mass_accuracy_on_the_box_region():
    """Coincide: Relevance Mass Accuracy with s = B_c is EBPG (Quantus's max-normalisation
    scales every map of the batch alike, which the ratio ignores; abs is a no-op on L_c >= 0).
    Differ: an all-zero map scores 0 in vqi, NaN (0 / 0) in Quantus."""
    rng = np.random.default_rng(1)
    maps = rng.random((12, 24, 24)) ** 4
    boxes = np.zeros((12, 24, 24), dtype=bool)
    for box, (y, x) in zip(boxes, rng.integers(0, 16, size=(12, 2))):
        box[y:y + 8, x:x + rng.integers(2, 9)] = True
    maps[-1] = 0.0
    with np.errstate(invalid="ignore"):                   # Quantus's 0 / 0 on the all-zero map
        theirs = np.asarray(quantus.RelevanceMassAccuracy(disable_warnings=True)(
            model=None, x_batch=np.zeros((12, 3, 24, 24)), y_batch=np.zeros(12, dtype=int), a_batch=maps,
            s_batch=boxes[:, None], channel_first=True), dtype=float)
    ours = plausibility.ebpg(maps, boxes)
    np.testing.assert_allclose(ours[:-1], 100.0 * theirs[:-1], rtol=1e-12)
    assert ours[-1] == 0.0 and np.isnan(theirs[-1])


def _take_from(source: np.ndarray):
    """A Quantus perturb_func that puts `source`'s values (N x C x H x W) at the given indices."""
    flat = source.reshape(len(source), -1)

    def perturb(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        rows = np.arange(len(arr))[:, None]
        out = arr.copy()
        out[rows, indices] = flat[rows, indices]
        return out
    return perturb


def test_deletion_and_insertion_curves_equal_quantus_region_perturbation_pixel_by_pixel():
    """Coincide: RegionPerturbation with 1-px patches in MoRF order over all N pixels, the
    model's output = conf_c (mean over T_c of the class probability, `softmax=False`), and a
    perturb_func that takes each pixel (all channels) from vqi's blurred copy; vqi with S = N
    steps, so step s deletes exactly s pixels. Insertion is the same run started from the
    blurred copy, taking pixels from x. Map values distinct (no order ties).
    Differ: Quantus records conf(x) - conf(x_s) without the s = 0 point; vqi records
    conf(x_s) / conf(x). Quantus has no Gaussian-blur baseline and no S < N steps of several
    pixels (its patches are squares, vqi's steps follow the map's order); its ties follow
    numpy's unstable argsort, vqi's a stable sort."""
    model = _model()
    image = torch.randn(3, SIZE, SIZE)
    n = SIZE * SIZE
    cam = torch.randperm(n, generator=torch.Generator().manual_seed(1)).float().view(1, SIZE, SIZE) / n
    target = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    target[0, 4:12, 2:14] = True
    class_id = 1
    deleted, inserted = deletion.curves(model, image, cam, [class_id], target, steps=n)

    soft = deletion.blur(image)[None].numpy()
    x = image[None].numpy()
    classifier = TargetConfidence(model, target[0]).eval()
    with torch.no_grad():
        conf_x, conf_soft = (float(classifier(torch.as_tensor(v))[0, class_id]) for v in (x, soft))

    def drops(start: np.ndarray, source: np.ndarray) -> np.ndarray:
        metric = quantus.RegionPerturbation(patch_size=1, order="morf", regions_evaluation=n, normalise=False,
                                            perturb_func=_take_from(source), disable_warnings=True)
        return np.asarray(metric(model=classifier, x_batch=start, y_batch=np.array([class_id]),
                                 a_batch=cam.numpy(), channel_first=True, softmax=False, batch_size=1))[0]

    assert np.ptp(deleted[0].numpy()) * conf_x > 1e-3       # the curve moves far more than the tolerance
    np.testing.assert_allclose(deleted[0, 1:].numpy() * conf_x, conf_x - drops(x, soft), atol=1e-6)
    np.testing.assert_allclose(inserted[0, 1:].numpy() * conf_x, conf_soft - drops(soft, x), atol=1e-6)


def test_cascading_randomisation_equals_quantus_mprt_layer_by_layer():
    """Coincide: a classifier-shaped case (each unit explains its class over the whole image, so
    the score is the global sum of the class logit), GradCAM maps at `backbone.conv2`, a model
    whose cascade steps are single layers, MPRT `top_down` and vqi's `randomise` given Quantus's
    seed + 1 at every step (Quantus re-seeds each layer with seed + 1). Both then re-initialise
    the same layers in the same order to the same values and take scipy's Spearman per map.
    Differ: vqi's cascade steps are blocks (head, ASPP, backbone stages), seeded seed + i;
    Quantus's are every module with `reset_parameters`; vqi reports SSIM beside rho and counts
    constant maps as undefined, Quantus leaves scipy's NaN in its list."""
    seed = 42
    images = torch.randn(3, 3, SIZE, SIZE)
    classes = np.array([0, 1, 2])
    whole = torch.ones(SIZE, SIZE, dtype=torch.bool)

    def explain(model, inputs, targets, **kwargs) -> np.ndarray:
        units = [Unit(i, int(c), whole) for i, c in enumerate(targets)]
        return GradCAM(model, "backbone.conv2")(torch.as_tensor(inputs), units).detach().numpy()

    model = _model()
    trained = explain(model, images, classes)
    ours = {}
    for label, modules in sanity.cascade_steps(model):
        sanity.randomise(modules, seed + 1)
        ours[label] = sanity.spearman(trained, explain(model, images, classes))

    with torch.random.fork_rng(devices=[]):                # MPRT seeds the global RNG: keep it from later tests
        theirs = quantus.MPRT(layer_order="top_down", seed=seed, disable_warnings=True)(
            model=_model(), x_batch=images.numpy(), y_batch=classes, a_batch=trained, explain_func=explain,
            channel_first=True, batch_size=3)
    assert np.allclose(theirs.pop("original"), 1.0)
    assert list(theirs) == list(ours) == ["classifier", "backbone.conv2", "backbone.bn1", "backbone.conv1"]
    for label, rho in ours.items():
        np.testing.assert_allclose(rho, theirs[label], atol=1e-12, err_msg=label)
    assert np.isfinite(ours["backbone.conv1"]).any() and np.nanmax(ours["backbone.conv1"]) < 0.9
