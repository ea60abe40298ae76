"""The fast CAM engine: hooks, one forward pass, gradients to the target layer only, post-processing.

Template method (as pytorch-grad-cam): `BaseCAM` owns the target-layer hook and the map
post-processing; `GradientCAM` computes activations A and the gradients dS/dA of every unit
from ONE forward pass per batch of images, and each method is one small subclass overriding
`channel_weights` (or `cam_image`). The target layer's output is replaced by a detached leaf
that requires grad while the parameters are frozen, so `torch.autograd.grad(scores, A)` runs
back through the head only: no parameter gradients, no backward through the backbone.
Post-processing mirrors pytorch-grad-cam's order exactly (ReLU, per-map min-max with eps 1e-7 at
layer resolution, bilinear resize = cv2 INTER_LINEAR, ReLU, min-max again), all in torch.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vqi.models.sparse_conv import tap_sparse_if_enabled as tap_sparse   # train.tap_sparse, off by default
from vqi.xai.targets import Unit, model_logits, target_scores
from vqi.engine.prediction import predicted_classes

EPS = 1e-7
"""pytorch-grad-cam's `scale_cam_image` epsilon."""


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule `name` (dotted, e.g. `backbone.layer4`), with the valid prefixes on error."""
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"target layer {name!r} (model.target_layer) not found in "
                         f"{type(model).__name__}; top-level modules: {top}") from err


def _minmax(cams: torch.Tensor) -> torch.Tensor:
    cams = cams - cams.flatten(1).min(dim=1).values[:, None, None]
    return cams / (EPS + cams.flatten(1).max(dim=1).values[:, None, None])


def float32_math(tensor: torch.Tensor) -> torch.autocast:
    """Autocast off on `tensor`'s device: a map's arithmetic after the model (channel weights,
    min-max with eps 1e-7, GradCAM++'s cubed gradients) runs in float32 even inside a
    mixed-precision pass, where float16 would underflow; without autocast it changes nothing."""
    return torch.autocast(tensor.device.type, enabled=False)


def scale_cams(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """U x h x w raw maps -> U x H x W in [0, 1], in pytorch-grad-cam's order."""
    cams = _minmax(cams.float().clamp_min(0))
    cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(cams.clamp_min(0))


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters require no grad inside the block (restored after), so no graph is kept for them."""
    changed = [p for p in model.parameters() if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


@contextmanager
def capture(layer: nn.Module, as_leaf: bool) -> Iterator[list[torch.Tensor]]:
    """Collect `layer`'s outputs; with `as_leaf`, the rest of the model sees a detached leaf
    that requires grad (the gradient stops there). The hook is removed on exit, always."""
    outputs: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"target layer {type(module).__name__} returned {type(output).__name__}, "
                            "expected a tensor")
        if as_leaf:
            output = output.detach().requires_grad_()
        outputs.append(output)
        return output if as_leaf else None

    handle = layer.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def _single(outputs: list[torch.Tensor], layer: nn.Module) -> torch.Tensor:
    if len(outputs) != 1:
        raise RuntimeError(f"target layer {type(layer).__name__} ran {len(outputs)} times in one "
                           "forward pass; pick a layer that runs exactly once")
    return outputs[0]


class BaseCAM:
    """A CAM method: `maps(images, units) -> U x H x W` float maps in [0, 1], one per unit."""

    name = "cam"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module):
        self.model = model.eval()
        self.layer = resolve_layer(model, target_layer) if isinstance(target_layer, str) else target_layer

    def maps(self, images: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, units: Sequence[Unit], **maps_options) -> torch.Tensor:
        """`maps` after checking the units; `maps_options` go to `maps` (e.g. a reused forward)."""
        if not units:
            return images.new_zeros((0, *images.shape[2:]))
        bad = [u for u in units if not 0 <= u.index < images.shape[0] or u.mask.shape != images.shape[2:]]
        if bad:
            raise ValueError(f"unit (image {bad[0].index}, class {bad[0].class_id}) does not fit the "
                             f"batch of {images.shape[0]} images of size {tuple(images.shape[2:])}")
        return self.maps(images, units, **maps_options)

    def predict_and_explain(self, images: torch.Tensor, choose: Callable[[torch.Tensor], Sequence[Unit]]
                            ) -> tuple[torch.Tensor, list[Unit], torch.Tensor]:
        """(N x H x W predicted classes, the units `choose(predictions)` picks, their maps).

        For callers whose units depend on the prediction (the augment stage): by default one
        no-grad forward for the prediction, then the method; a method whose own forward pass
        already gives the logits (the gradient methods) reuses it instead of running two.
        """
        with torch.no_grad():
            preds = predicted_classes(model_logits(self.model, images))
        units = list(choose(preds))
        return preds, units, self(images, units)


Forward = tuple[torch.Tensor, torch.Tensor]
"""(logits, target-layer activations as a grad-requiring leaf) of one forward pass."""


class GradientCAM(BaseCAM):
    """Gradient-based methods: one forward per batch, dS/dA for every unit, a per-method combination."""

    def forward(self, images: torch.Tensor) -> Forward:
        """One forward pass that keeps the graph from the target layer's output to the logits."""
        with frozen(self.model), tap_sparse(self.model):
            with torch.enable_grad(), capture(self.layer, as_leaf=True) as outs:
                logits = model_logits(self.model, images)
        return logits, _single(outs, self.layer)

    def activations_and_grads(self, images: torch.Tensor, units: Sequence[Unit],
                              forward: Forward | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, dS/dA) per unit, each U x K x h x w, from one forward pass (`forward`, else run
        here) and one VJP per class."""
        logits, acts = forward if forward is not None else self.forward(images)
        with frozen(self.model), tap_sparse(self.model):
            scores, classes = target_scores(logits, units)
            # One vector-Jacobian product per class column: the column's sum over the batch
            # gives every image its own gradient (images never mix in eval mode).
            grads = torch.stack([torch.autograd.grad(scores[:, j].sum(), acts, retain_graph=j + 1 < len(classes))[0]
                                 for j in range(len(classes))])
        col = {c: j for j, c in enumerate(classes)}
        index = torch.tensor([u.index for u in units], device=acts.device)
        cols = torch.tensor([col[u.class_id] for u in units], device=acts.device)
        return acts.detach()[index].float(), grads[cols, index].float()

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """U x K weights of the channels; the map is sum_k w_k A_k."""
        raise NotImplementedError

    def cam_image(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """U x h x w raw map before post-processing."""
        return torch.einsum("uk,ukhw->uhw", self.channel_weights(acts, grads), acts)

    def maps(self, images: torch.Tensor, units: Sequence[Unit], forward: Forward | None = None) -> torch.Tensor:
        acts, grads = self.activations_and_grads(images, units, forward)
        with float32_math(acts):
            return scale_cams(self.cam_image(acts, grads), tuple(images.shape[2:]))

    def predict_and_explain(self, images: torch.Tensor, choose: Callable[[torch.Tensor], Sequence[Unit]]
                            ) -> tuple[torch.Tensor, list[Unit], torch.Tensor]:
        """The prediction comes from the explanation's own forward pass: one forward, not two."""
        forward = self.forward(images)
        preds = predicted_classes(forward[0].detach())
        units = list(choose(preds))
        return preds, units, self(images, units, forward=forward)


def gradient_maps(methods: Sequence[GradientCAM], images: torch.Tensor,
                  units: Sequence[Unit]) -> dict[str, torch.Tensor]:
    """Several gradient-based methods from ONE forward pass and its VJPs: `{name: U x H x W}`."""
    if not methods:
        return {}
    if any(m.model is not methods[0].model or m.layer is not methods[0].layer for m in methods):
        raise ValueError("gradient_maps: every method must explain the same model and target layer")
    acts, grads = methods[0].activations_and_grads(images, units)
    size = tuple(images.shape[2:])
    with float32_math(acts):
        return {m.name: scale_cams(m.cam_image(acts, grads), size) for m in methods}
