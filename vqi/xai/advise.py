"""ADVISE (Dehshibi et al. 2022) for a segmentation unit: Grad-CAM over one group of equally
relevant channels (docs/metrics.md, "ADVISE").

A channel's relevance is the number of peaks of the adaptive-bandwidth kernel density of its
values at the target layer (`adaptive_kde`); channels with the same count form a group. The
authors draw one map per group and keep the one their AVX score (a model pass on the masked image
and image-similarity scores) likes best; here the group kept is the one whose Grad-CAM terms
sum_k w_k sum_hw A_k add up to the most of the class score, so the method needs no pass beyond the
gradient methods' shared one and never uses an evaluation metric to choose its own map.
"""
from __future__ import annotations

import torch
from torch import nn

from vqi.xai.adaptive_kde import adaptive_kde, count_peaks
from vqi.xai.base import GradientCAM

DENSITY_OF = ("activations", "gradients")
DOMAINS = ("minmax", "clip")


def channel_samples(values: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
    """N x K x h x w -> (N*K x h*w values in [0, 1] where counted, which are counted).

    `minmax` scales each channel to [0, 1] (a constant channel has nothing to count); `clip`
    counts only the values already in [0, 1], as the authors' code does."""
    x = values.flatten(2).flatten(0, 1).to(torch.float64)
    if domain == "clip":
        return x, (x >= 0) & (x <= 1)
    low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    span = high - low
    return (x - low) / torch.where(span > 0, span, 1), (span > 0).expand_as(x)


class AdviseCAM(GradientCAM):
    name = "advise"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, density_of: str = "activations",
                 domain: str = "minmax", bandwidths: int = 10):
        super().__init__(model, target_layer)
        if density_of not in DENSITY_OF:
            raise ValueError(f"xai.method.density_of: expected one of {DENSITY_OF}, got {density_of!r}")
        if domain not in DOMAINS:
            raise ValueError(f"xai.method.domain: expected one of {DOMAINS}, got {domain!r}")
        if int(bandwidths) < 2:
            raise ValueError(f"xai.method.bandwidths (candidate kernel widths) must be >= 2, got {bandwidths}")
        self.density_of, self.domain, self.bandwidths = density_of, domain, int(bandwidths)

    def relevance(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """U x K peak counts of each channel's value density (units of one image share their
        activations, so with `density_of=activations` each image is estimated once)."""
        values = acts if self.density_of == "activations" else grads
        distinct, which = torch.unique(values.flatten(1), dim=0, return_inverse=True)
        samples, inside = channel_samples(distinct.view(-1, *values.shape[1:]), self.domain)
        peaks = count_peaks(adaptive_kde(samples, inside, self.bandwidths)).view(distinct.shape[0], -1)
        return peaks[which]

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Grad-CAM weights (mean gradient) on the chosen group's channels, zero elsewhere."""
        weights = grads.mean(dim=(2, 3))
        peaks = self.relevance(acts, grads)
        terms = weights * acts.sum(dim=(2, 3))
        groups = int(peaks.max()) + 1
        share = terms.new_zeros((len(terms), groups)).scatter_add_(1, peaks, terms)
        present = torch.zeros_like(share, dtype=torch.bool).scatter_(1, peaks, True)
        chosen = share.masked_fill(~present, -torch.inf).argmax(dim=1)
        return weights * (peaks == chosen[:, None])
