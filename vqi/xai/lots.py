"""LOTS (layerwise origin-target synthesis, Rozsa et al. 2017) as an explanation, after Weber (2023):
an iterative perturbation of the input that moves the target layer's features towards target
features; the perturbation, blurred, is the map (docs/metrics.md, "LOTS").

Per unit (image n, class c, target mask T_c):
- origin: image n in pixel space [0, 1] (the input normalisation undone), so that the step width
  and the clamp are the thesis's;
- footprint: the target layer's cells that T_c touches; target F_t: one feature vector, the mean
  of the image's own features over the cells T_c does not touch (what the layer sees where there
  is no c), the zero vector when T_c touches every cell;
- step: x <- clamp(x - alpha * g / max|g|, 0, 1), g = d/dx of 1/2 sum over the footprint of
  ||F(x) - F_t||^2 (the thesis's Algorithm 1);
- stop: once the footprint's distance ||F(x) - F_t|| has fallen to `tolerance` of its start, or
  after `steps` steps;
- map: |grey(x) - grey(origin)|, min-max, Gaussian blur of `blur_sigma` px (0: none), min-max
  (the thesis's Algorithm 2): at input resolution, whatever the layer's.

Cost per unit: one forward pass for the origin's features, then at most `steps` forward passes
up to the target layer (the layers after it never run) and as many backward passes to the input.
Units run `batch_size` at a time as one batch; a unit leaves the batch once it has converged.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur, rgb_to_grayscale

from vqi.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vqi.models.sparse_conv import tap_sparse_if_enabled as tap_sparse   # train.tap_sparse, off by default
from vqi.xai.base import BaseCAM, _minmax, frozen
from vqi.xai.targets import Unit, model_logits


class _LayerReached(Exception):
    """Raised once the target layer has run: what comes after it is not needed."""


@contextmanager
def _stop_after(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect `layer`'s output and end the forward pass there; the hook is removed on exit."""
    outputs: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output)
        raise _LayerReached

    handle = layer.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """U x H x W maps blurred by a Gaussian of `sigma` px (kernel radius ceil(3 sigma), reflected
    borders, as cv2.GaussianBlur); sigma 0 returns them unchanged."""
    if sigma == 0:
        return maps
    radius = min(math.ceil(3 * sigma), min(maps.shape[-2:]) - 1)
    return gaussian_blur(maps[:, None], [2 * radius + 1] * 2, [float(sigma)] * 2)[:, 0]


class LOTS(BaseCAM):
    name = "lots"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, steps: int = 20,
                 step_size: float = 1 / 255, tolerance: float = 0.1, blur_sigma: float = 1.0,
                 batch_size: int = 8, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(model, target_layer)
        checks = {"steps": (steps, int(steps) >= 1, ">= 1"), "step_size": (step_size, step_size > 0, "> 0"),
                  "tolerance": (tolerance, 0 <= tolerance < 1, "in [0, 1)"),
                  "blur_sigma": (blur_sigma, blur_sigma >= 0, ">= 0"),
                  "batch_size": (batch_size, int(batch_size) >= 1, ">= 1")}
        for key, (value, ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"xai.method.{key} (LOTS) must be {expected}, got {value!r}")
        self.steps, self.step_size, self.tolerance = int(steps), float(step_size), float(tolerance)
        self.blur_sigma, self.batch_size = float(blur_sigma), int(batch_size)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def layer_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The target layer's output for `pixels` (N x 3 x H x W in [0, 1]), in float32."""
        with _stop_after(self.layer) as outputs:
            try:
                model_logits(self.model, (pixels - self.mean.to(pixels)) / self.std.to(pixels))
            except _LayerReached:
                pass
        if len(outputs) != 1:
            raise RuntimeError(f"target layer {type(self.layer).__name__} did not run in the forward pass")
        return outputs[0].float()

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        out = images.new_empty((len(units), *images.shape[2:]))
        for start in range(0, len(units), self.batch_size):
            chunk = units[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._unit_maps(images, chunk).to(out.dtype)
        return out

    def _unit_maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        """The maps of a few units, their LOTS runs batched together."""
        origin = images[[u.index for u in units]].float() * self.std.to(images.device) + self.mean.to(images.device)
        with frozen(self.model), tap_sparse(self.model):
            with torch.no_grad():
                features = self.layer_features(origin)
            masks = torch.stack([u.mask for u in units]).to(features)
            footprint = (F.adaptive_max_pool2d(masks[:, None], features.shape[-2:]) > 0).to(features)
            outside = 1 - footprint   # the target: the mean feature outside the footprint (zero if none)
            targets = ((features * outside).sum(dim=(2, 3), keepdim=True)
                       / outside.sum(dim=(2, 3), keepdim=True).clamp_min(1))
            start = ((features - targets) * footprint).flatten(1).norm(dim=1)
            adversarial = self._synthesise(origin, targets, footprint, start)
        change = (rgb_to_grayscale(adversarial) - rgb_to_grayscale(origin))[:, 0].abs()
        return _minmax(blur(_minmax(change), self.blur_sigma))

    def _synthesise(self, origin: torch.Tensor, targets: torch.Tensor, footprint: torch.Tensor,
                    start: torch.Tensor) -> torch.Tensor:
        """Algorithm 1 for every unit at once: each unit's image moved until its footprint's
        distance to its target is at most `tolerance` times `start` (the origin's), or `steps` ran."""
        pixels = origin.clone()
        active = torch.arange(len(origin), device=origin.device)
        for _ in range(self.steps):
            x = pixels[active].requires_grad_()
            with torch.enable_grad():
                gap = (self.layer_features(x) - targets[active]) * footprint[active]
                (grad,) = torch.autograd.grad(gap.pow(2).sum() / 2, x)
            moving = gap.detach().flatten(1).norm(dim=1) > self.tolerance * start[active]
            peak = grad.flatten(1).abs().max(dim=1).values.clamp_min(torch.finfo(grad.dtype).tiny)
            stepped = (x.detach() - grad * (self.step_size / peak)[:, None, None, None]).clamp(0, 1)
            pixels[active[moving]] = stepped[moving]
            active = active[moving]
            if not len(active):
                break
        return pixels
