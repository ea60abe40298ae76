"""Model-randomisation sanity check (Adebayo et al. 2018; docs/metrics.md): the model's
parameters are re-initialised cascading from the top, and each step's maps are compared with the
trained model's by Spearman rank correlation and SSIM. An explanation that survives the loss of
the weights it claims to explain describes the input, not the model.

A map that is constant (e.g. all zero) has no ranking: its correlation is undefined (NaN) and
is counted as such, never averaged as a number. Since L_c >= 0, ranking |L_c| equals ranking
L_c; the "absolute" figure is therefore |rho| per unit, averaged (signs cannot cancel).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per unit Spearman rho of two U x H x W stacks (`scipy.stats.spearmanr` of unit u's two
    flattened maps, ties at their average rank). NaN where either map is constant: it has no
    ranking. That case is decided here, not left to scipy, so that it stays a documented rule and
    raises no warning per unit. One unit at a time: spearmanr over whole stacks would correlate
    every map with every other (2U x 2U)."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"spearman: the stacks differ in shape, {np.shape(a)} and {np.shape(b)}")
    out = np.full(len(a), np.nan)
    for u, (x, y) in enumerate(zip(a, b)):
        x, y = np.ravel(x), np.ravel(y)
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[u] = stats.spearmanr(x, y).statistic
    return out


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Per unit SSIM (Wang et al. 2004): 11 x 11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    averaged over the positions where the window fits in the map. Defined for constant maps too."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)[:, None]
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)[:, None]
    if min(x.shape[2:]) < 11:
        raise ValueError(f"ssim: maps must be at least 11 x 11, got {tuple(x.shape[2:])}")
    w = _gaussian_window()
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx, vy = F.conv2d(x * x, w) - mx ** 2, F.conv2d(y * y, w) - my ** 2
    cov = F.conv2d(x * y, w) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def cascade_steps(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(label, modules) per randomisation step, top first: the segmentation head without ASPP,
    then ASPP, then the backbone's top-level blocks from the last to the first (those with
    parameters); first of all, a model's `explanation_branch` where it has one (IMPACTX's encoder
    and decoder). Works for torchvision's DeepLabv3 (ResNet and MobileNetV3 backbones)."""
    steps: list[tuple[str, list[nn.Module]]] = []
    branch = getattr(model, "explanation_branch", None)   # IMPACTX's: on top of everything it explains with
    if branch:
        steps.append(("explanation", list(branch)))
    head = getattr(model, "classifier", None)
    if head is None or not hasattr(model, "backbone"):
        raise ValueError(f"sanity check: {type(model).__name__} has no `classifier` and `backbone`")
    children = list(head.children())
    if children and type(children[0]).__name__ == "ASPP":
        steps += [("classifier", children[1:]), ("aspp", children[:1])]
    else:
        steps.append(("classifier", [head]))
    blocks = [(n, m) for n, m in model.backbone.named_children() if any(True for _ in m.parameters())]
    steps += [(f"backbone.{n}", [m]) for n, m in reversed(blocks)]
    return steps


@torch.no_grad()
def randomise(modules: Sequence[nn.Module], seed: int) -> int:
    """Re-initialise every submodule that has `reset_parameters` (convs, norms, linears: their
    default init; batch norm running statistics too), seeded without touching the global RNG.
    Returns how many parameters were re-initialised."""
    count = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in modules:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters") and any(True for _ in sub.parameters(recurse=False)):
                    sub.reset_parameters()
                    if hasattr(sub, "reset_running_stats"):
                        sub.reset_running_stats()
                    count += sum(p.numel() for p in sub.parameters(recurse=False))
    return count


def summarise(rho: np.ndarray, ssim_values: np.ndarray) -> dict[str, float]:
    """Means over units: rho and |rho| over the units where rho is defined (NaN when none is),
    SSIM over all; with the counts."""
    rho = np.asarray(rho, dtype=float)
    defined = np.isfinite(rho)
    return {"rho": float(rho[defined].mean()) if defined.any() else float("nan"),
            "abs_rho": float(np.abs(rho[defined]).mean()) if defined.any() else float("nan"),
            "ssim": float(np.mean(ssim_values)) if len(ssim_values) else float("nan"),
            "units": float(len(rho)), "undefined": float((~defined).sum())}
