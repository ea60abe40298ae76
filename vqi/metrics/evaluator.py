"""The evaluator protocol (reset / process / evaluate), so every metric is fed in one pass.

`process` receives one image's `ImageResult` (all its units at once); `evaluate` returns flat
`{name: value}` metrics with a per-class breakdown as `<metric>/<class name>`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from vqi.metrics import deletion, faithfulness, plausibility, pointing


@dataclass
class ImageResult:
    """One image's units: class ids (U), maps/boxes/gt masks (U x H x W) and optional extras."""

    stem: str
    class_ids: list[int]
    maps: np.ndarray
    boxes: np.ndarray
    gt: np.ndarray
    y: np.ndarray | None = None          # conf_c(x) per unit
    o: np.ndarray | None = None          # conf_c(x * L_c) per unit
    seconds: float | None = None         # time to explain all units of the image
    skipped: dict[int, str] = field(default_factory=dict)   # class id -> reason
    image: torch.Tensor | None = None    # the normalised input, 3 x H x W (deletion / insertion)
    targets: torch.Tensor | None = None  # T_c per unit, U x H x W bool, on the image's device


class Evaluator(Protocol):
    def reset(self) -> None: ...
    def process(self, result: ImageResult) -> None: ...
    def evaluate(self) -> dict[str, float]: ...


class _PerClass:
    """Per-unit values of several metrics, averaged overall and per class."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.values: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def add(self, name: str, class_ids: Sequence[int], values: np.ndarray) -> None:
        self.values[name].extend(zip(class_ids, map(float, values)))

    def summary(self) -> dict[str, float]:
        out = {}
        for name, pairs in self.values.items():
            if not pairs:
                continue
            out[name] = float(np.mean([v for _, v in pairs]))
            for c in sorted({c for c, _ in pairs}):
                out[f"{name}/{self.class_names[c]}"] = float(np.mean([v for k, v in pairs if k == c]))
        return out


class PlausibilityEvaluator:
    """EBPG, IoU (threshold `tau`) and Bbox against the annotation."""

    def __init__(self, class_names: Sequence[str], tau: float = 0.5):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"metrics.tau must be in [0, 1], got {tau}")
        self.class_names, self.tau = class_names, tau
        self.reset()

    def reset(self) -> None:
        self.acc = _PerClass(self.class_names)

    def process(self, result: ImageResult) -> None:
        if not result.class_ids:
            return
        gt = np.stack([result.gt == c for c in result.class_ids])
        self.acc.add("ebpg", result.class_ids, plausibility.ebpg(result.maps, result.boxes))
        self.acc.add("iou", result.class_ids, plausibility.iou(result.maps, gt, self.tau))
        self.acc.add("bbox", result.class_ids, plausibility.bbox(result.maps, result.boxes))

    def evaluate(self) -> dict[str, float]:
        return self.acc.summary()


class FaithfulnessEvaluator:
    """Average Drop and Increase in Confidence from each unit's (Y, O)."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self.acc = _PerClass(self.class_names)

    def process(self, result: ImageResult) -> None:
        if not result.class_ids:
            return
        if result.y is None or result.o is None:
            raise ValueError(f"image {result.stem}: faithfulness needs confidences y and o")
        y, o = torch.as_tensor(result.y), torch.as_tensor(result.o)
        self.acc.add("drop", result.class_ids, faithfulness.drop(y, o).numpy())
        self.acc.add("increase", result.class_ids, faithfulness.increase(y, o).numpy())

    def evaluate(self) -> dict[str, float]:
        return self.acc.summary()


class PointingEvaluator:
    """Pointing game with a tolerance of `radius` px for thin objects."""

    def __init__(self, class_names: Sequence[str], radius: float = 3.0):
        if radius < 0:
            raise ValueError(f"metrics.pointing.radius must be >= 0, got {radius}")
        self.class_names, self.radius = class_names, float(radius)
        self.reset()

    def reset(self) -> None:
        self.acc = _PerClass(self.class_names)

    def process(self, result: ImageResult) -> None:
        if result.class_ids:
            gt = np.stack([result.gt == c for c in result.class_ids])
            self.acc.add("pointing", result.class_ids, pointing.hits(result.maps, gt, self.radius))

    def evaluate(self) -> dict[str, float]:
        return self.acc.summary()


class DeletionInsertionEvaluator:
    """Deletion and insertion AUC (%), `batch_size` perturbed inputs per forward pass; keeps the
    mean curves (`curves()`) for the figure."""

    def __init__(self, class_names: Sequence[str], model: torch.nn.Module, steps: int = 32,
                 batch_size: int = 16, sigma: float | None = None):
        if int(steps) < 1 or int(batch_size) < 1:
            raise ValueError(f"metrics.deletion: steps and batch_size must be >= 1, got {steps}, {batch_size}")
        self.class_names, self.model = class_names, model
        self.steps, self.batch_size, self.sigma = int(steps), int(batch_size), sigma
        self.reset()

    def reset(self) -> None:
        self.acc = _PerClass(self.class_names)
        self.sums = {"deletion": np.zeros(self.steps + 1), "insertion": np.zeros(self.steps + 1)}
        self.count = 0

    def process(self, result: ImageResult) -> None:
        if not result.class_ids:
            return
        if result.image is None or result.targets is None:
            raise ValueError(f"image {result.stem}: deletion / insertion need the image and the target masks")
        maps = torch.as_tensor(result.maps, device=result.image.device)
        dele, ins = deletion.curves(self.model, result.image, maps, result.class_ids, result.targets,
                                    self.steps, self.batch_size, self.sigma)
        for name, curve in (("deletion", dele.cpu().numpy()), ("insertion", ins.cpu().numpy())):
            self.acc.add(name, result.class_ids, deletion.auc(curve))
            self.sums[name] += curve.sum(axis=0)
        self.count += len(result.class_ids)

    def evaluate(self) -> dict[str, float]:
        return self.acc.summary()

    def curves(self) -> dict[str, list[float]]:
        """Mean curve over units per kind (S + 1 points at s / S), empty before any unit."""
        return {k: (v / self.count).tolist() for k, v in self.sums.items()} if self.count else {}


class TimeEvaluator:
    """Median seconds per image to explain all its units (images with no unit not counted)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds: list[float] = []

    def process(self, result: ImageResult) -> None:
        if result.seconds is not None and result.class_ids:
            self.seconds.append(float(result.seconds))

    def evaluate(self) -> dict[str, float]:
        return {"time": float(np.median(self.seconds))} if self.seconds else {}


class UnitCounter:
    """How many units were averaged (overall, per class) and how many skipped, by reason."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.reset()

    def reset(self) -> None:
        self.units: Counter = Counter()
        self.skipped: Counter = Counter()
        self.images = 0

    def process(self, result: ImageResult) -> None:
        self.images += 1
        self.units.update(result.class_ids)
        self.skipped.update(result.skipped.values())

    def evaluate(self) -> dict[str, float]:
        out = {"images": float(self.images), "units": float(sum(self.units.values()))}
        out.update({f"units/{self.class_names[c]}": float(n) for c, n in sorted(self.units.items())})
        out.update({f"skipped/{reason}": float(n) for reason, n in sorted(self.skipped.items())})
        return out


class Evaluators:
    """Several evaluators fed together; their results merged (names must not clash)."""

    def __init__(self, evaluators: Sequence[Evaluator]):
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, result: ImageResult) -> None:
        for e in self.evaluators:
            e.process(result)

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.evaluators:
            part = e.evaluate()
            clash = set(out) & set(part)
            if clash:
                raise ValueError(f"evaluators report the same metric(s): {sorted(clash)}")
            out.update(part)
        return out
