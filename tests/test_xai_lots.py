"""LOTS: pixel-precise maps on a hand-made model whose answer is known, the blur's focus, the
stopping rule, and a real torchvision model through its Hydra config."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vqi.augment import regions
from vqi.augment.proposals import ENLARGE, Proposal
from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vqi.engine.precision import Precision
from vqi.models.factory import build_model
from vqi.config import build_cam
from vqi.study.evidence import explained_images
from vqi.study.rankers import CAM, LOTS as LOTS_MAPS, Evidence, review_order
from vqi.study.rankers.cam import CamRanker
from vqi.study.rankers.lots import LotsRanker
from vqi.xai.hirescam import HiResCAM
from vqi.xai.lots import LOTS
from vqi.xai.targets import Unit

SIZE, CELL = 32, 4
MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


class PatchSegmenter(nn.Module):
    """A 4x4-stride-4 `target_layer` (8x8 cells on a 32x32 image) with two channels: `wire` reads
    only pixel (1, 1) of each cell, `context` only pixel (2, 2); class 1's logit is `wire` alone,
    class 0's `context` + 1 (only a white wire pixel makes class 1 win), upsampled by copying each
    cell. So class 1's score over a mask depends only on the (1, 1) pixels of the cells under it:
    a region a quarter of a cell's width, which no map at the layer's resolution can pick out."""

    def __init__(self):
        super().__init__()
        self.target_layer = nn.Conv2d(3, 2, CELL, stride=CELL, bias=False)
        self.head = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.target_layer.weight.zero_()
            self.target_layer.weight[0, :, 1, 1] = 1.0
            self.target_layer.weight[1, :, 2, 2] = 1.0
            self.head.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]])[:, :, None, None])
            self.head.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.target_layer(x)).repeat_interleave(CELL, 2).repeat_interleave(CELL, 3)


def wire_image(cell_row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised image, the wire's cells as T_c, the wire's pixels R): grey everywhere, the (1, 1)
    pixel of every cell in `cell_row` white. The context pixels are the same in every cell."""
    pixels = torch.full((3, SIZE, SIZE), 0.5)
    rows = slice(cell_row * CELL, (cell_row + 1) * CELL)
    region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    region[cell_row * CELL + 1, 1::CELL] = True
    pixels[:, region] = 1.0
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[rows] = True
    return (pixels - MEAN) / STD, mask, region


def mass_in(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of each map's sum that lies in `region`."""
    return maps[:, region].sum(dim=1) / maps.flatten(1).sum(dim=1)


def test_lots_puts_the_map_on_the_pixels_the_class_reads_where_a_cam_cannot():
    model = PatchSegmenter().eval()
    (a, mask_a, region_a), (b, mask_b, region_b) = wire_image(3), wire_image(5)
    images = torch.stack([a, b])
    units = [Unit(0, 1, mask_a), Unit(1, 1, mask_b)]
    maps = LOTS(model, "target_layer", steps=5, blur_sigma=0)(images, units)
    assert maps.shape == (2, SIZE, SIZE) and float(maps.min()) >= 0 and float(maps.max()) == pytest.approx(1)
    share = region_a.float().mean()                         # 8 of 1024 pixels
    assert mass_in(maps[:1], region_a) > 0.99 and mass_in(maps[1:], region_b) > 0.99
    assert mass_in(maps[:1], region_b) < 0.01 and share < 0.01
    # the same pixels' share of a CAM at the layer: the whole cell row lights, not its wire pixels
    cam = HiResCAM(model, "target_layer")(images, units)
    assert mass_in(cam[:1], region_a) < 0.1
    # units batched together or one at a time: the same maps
    torch.testing.assert_close(LOTS(model, "target_layer", steps=5, blur_sigma=0, batch_size=1)(images, units), maps)


def test_a_wider_blur_spreads_the_map_beyond_the_wire():
    model = PatchSegmenter().eval()
    image, mask, region = wire_image(3)
    sharp, wide = (LOTS(model, "target_layer", steps=3, blur_sigma=s)(image[None], [Unit(0, 1, mask)]) for s in (0, 3))
    assert mass_in(sharp, region) > 0.99 > 0.5 > mass_in(wide, region)
    rows = (wide[0] > 0.05).nonzero()[:, 0]
    assert rows.min() >= 13 - 9 and rows.max() <= 13 + 9      # still around the wire's row: within 3 sigma


def test_lots_stops_once_the_footprint_is_near_its_target_and_targets_what_the_layer_sees_elsewhere():
    """Each step moves the white wire pixels by at most 1/16 towards grey; the footprint's distance
    to the mean of the other cells falls by about 1/8 of its start per step (0.50 of it left after
    4 steps, 0.38 after 5), so tolerance 0.45 is reached after 5 steps: 1 forward pass for the
    origin and 6 checks. Were the target the zero vector, the context pixels would move too."""
    model = PatchSegmenter().eval()
    image, mask, region = wire_image(3)
    calls = []
    handle = model.target_layer.register_forward_hook(lambda *args: calls.append(1))
    try:
        maps = LOTS(model, "target_layer", steps=50, step_size=1 / 16, tolerance=0.45, blur_sigma=0)(image[None],
                                                                                                      [Unit(0, 1, mask)])
    finally:
        handle.remove()
    assert len(calls) == 7
    assert mass_in(maps, region) > 0.99
    uniform, _, _ = wire_image(3)
    uniform[:] = ((torch.full((3, 1, 1), 0.5) - MEAN) / STD)  # no wire: the footprint already looks like the rest
    assert float(LOTS(model, "target_layer", blur_sigma=0)(uniform[None], [Unit(0, 1, mask)]).max()) == 0


def test_lots_from_its_config_on_lraspp_mobilenet_gives_input_resolution_maps_and_refuses_the_library(make_cfg):
    torch.manual_seed(0)
    model = build_model(arch="lraspp_mobilenet_v3_large", num_classes=5, weights=None, weights_backbone=None).eval()
    cfg = make_cfg("model=lraspp_mobilenet_v3_large", "xai=lots", "xai.method.steps=2")
    cam = build_cam(cfg, model)
    assert isinstance(cam, LOTS) and cam.steps == 2 and cfg.xai.name == "lots"
    images, top = torch.randn(2, 3, 40, 40), torch.zeros(40, 40, dtype=torch.bool)
    top[:20] = True
    maps = cam(images, [Unit(0, 1, top), Unit(0, 3, ~top), Unit(1, 2, top)])
    assert maps.shape == (3, 40, 40) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert (maps.flatten(1).max(dim=1).values > 0.99).all() and not torch.equal(maps[0], maps[1])
    with pytest.raises(ValueError, match="engine=fast"):
        build_cam(make_cfg("model=lraspp_mobilenet_v3_large", "xai=lots", "xai.engine=library"), model)
    with pytest.raises(ValueError, match="xai.method.blur_sigma"):
        LOTS(model, "backbone.15", blur_sigma=-1)


def test_the_lots_ranker_tells_the_wire_from_its_border_where_the_cam_ranker_cannot():
    """Issue 21 in small: a proposal on the wire's pixels and one on the row beside them lie in the
    same layer cells, so the CAM scores them alike; the LOTS map, from the evidence pass as
    stage=budget runs it, puts the wire first."""
    model = PatchSegmenter().eval()
    image, _, wire = wire_image(3)
    beside = torch.roll(wire, 1, dims=0)
    batches = [(image[None], torch.zeros(1, SIZE, SIZE, dtype=torch.uint8), ["a"])]
    class_ids = {"background": 0, "cable": 1}
    (seen,) = explained_images(batches, model, torch.device("cpu"), Precision(), class_ids, ["cable"], {CAM, LOTS_MAPS},
                               HiResCAM(model, "target_layer"), lots_method=LOTS(model, "target_layer", steps=5))
    assert seen.lots["cable"].shape == (SIZE, SIZE) and seen.fine_cams == {}
    evidence = Evidence(seen.label, class_ids, cams=seen.cams, lots=seen.lots)
    proposals = [Proposal(proposal_id=name, image="a", kind=ENLARGE, class_name="cable", score=0.0,
                          region=regions.encode(mask.numpy()), bbox=regions.bbox(mask.numpy()),
                          area=int(mask.sum()), annotation_id=1, k=1)
                 for name, mask in (("a/beside", beside), ("a/wire", wire))]
    ids = [p.proposal_id for p in proposals]
    cam_scores, lots_scores = CamRanker().scores(proposals, evidence), LotsRanker().scores(proposals, evidence)
    assert cam_scores[0] == pytest.approx(cam_scores[1], abs=1e-6)
    assert lots_scores[1] > 1.5 * lots_scores[0] and review_order(ids, lots_scores) == [1, 0]
    with pytest.raises(ValueError, match="lots"):
        next(explained_images(batches, model, torch.device("cpu"), Precision(), class_ids, ["cable"], {LOTS_MAPS}))


@pytest.mark.slow
def test_explain_and_evaluate_run_lots_as_a_table_row(make_cfg, tmp_path):
    """What `stage=all` runs for `xai_methods=[..., lots]`: explain writes input-sized maps per
    unit, evaluate scores them like any method's."""
    import mlflow
    from xai_factory import xai_setup

    from vqi import tracking
    from vqi.stages import evaluate, explain
    from vqi.xai.maps import load_maps, read_meta

    cfg = make_cfg(*xai_setup(tmp_path), "xai=lots", "xai.method.steps=2", "xai.figures=0", stage="explain")
    experiment_id = tracking.configure(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(experiment_id=experiment_id):
        out = explain.run(cfg)
    method_dir = Path(cfg.xai.maps_dir) / "lots"
    assert read_meta(method_dir)["method"] == "lots" and out["units"] > 0
    maps = [m for p in method_dir.glob("*.npz") for m in load_maps(p).values()]
    assert len(maps) == out["units"] and all(m.shape == (40, 40) and 0 <= m.min() and m.max() <= 1 for m in maps)
    with mlflow.start_run(experiment_id=experiment_id):
        metrics = evaluate.run(cfg)
    assert metrics["units"] == out["units"] and all(np.isfinite(metrics[k]) for k in ("ebpg", "iou", "drop", "deletion"))
