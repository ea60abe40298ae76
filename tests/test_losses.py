"""Segmentation losses against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from vqi.models.losses import CrossEntropyLoss, DiceCELoss, DiceLoss, GeneralizedDiceLoss

# Four pixels: three of class 0, one of class 1; with zero logits every probability is 1/C.
TARGET = torch.tensor([[[0, 0], [0, 1]]])


def uniform(num_classes: int, target: torch.Tensor = TARGET) -> torch.Tensor:
    return torch.zeros(target.shape[0], num_classes, *target.shape[1:], requires_grad=True)


def test_dice_uniform_prediction_known_value():
    # class 0: (2*1.5 + 1) / (2 + 3 + 1) = 2/3; class 1: (2*0.5 + 1) / (2 + 1 + 1) = 1/2
    loss = DiceLoss(smooth=1.0)(uniform(2), TARGET)
    assert loss.item() == pytest.approx(1 - (2 / 3 + 1 / 2) / 2)


def test_dice_perfect_prediction_is_zero_and_absent_class_counts_as_matched():
    logits = torch.nn.functional.one_hot(TARGET, 3).permute(0, 3, 1, 2).float() * 100
    assert DiceLoss(smooth=1.0)(logits, TARGET).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_ignores_255_pixels_whatever_their_logits():
    target = torch.tensor([[[0, 0, 255], [0, 1, 255]]])
    logits = torch.zeros(1, 2, 2, 3)
    logits[:, 1, :, 2] = 50.0  # confident, wrong-looking logits on the ignored column
    assert DiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(1 - (2 / 3 + 1 / 2) / 2)


def test_generalized_dice_known_value():
    # w0 = 1/9, w1 = 1: 1 - 2(1.5/9 + 0.5) / ((2 + 3)/9 + (2 + 1)) = 1 - 12/32
    loss = GeneralizedDiceLoss(smooth=0.0)(uniform(2), TARGET)
    assert loss.item() == pytest.approx(0.625)


def test_generalized_dice_absent_class_gets_the_largest_finite_weight():
    # p = 1/3; w = (1/9, 1, 1): numerator 2(1/9 + 1/3) = 8/9, denominator 13/27 + 7/3 + 4/3
    loss = GeneralizedDiceLoss(smooth=0.0)(uniform(3), TARGET)
    assert loss.item() == pytest.approx(1 - (8 / 9) / (112 / 27))


def test_cross_entropy_and_dice_ce_known_values():
    assert CrossEntropyLoss()(uniform(2), TARGET).item() == pytest.approx(math.log(2))
    both = DiceCELoss(dice_weight=2.0, ce_weight=0.5)(uniform(2), TARGET).item()
    assert both == pytest.approx(2 * (1 - 7 / 12) + 0.5 * math.log(2))


@pytest.mark.parametrize("loss_cls", [DiceLoss, GeneralizedDiceLoss, CrossEntropyLoss, DiceCELoss])
def test_losses_fall_when_logits_follow_the_gradient(loss_cls):
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, :] = 255
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss_fn = loss_cls()
    first = loss_fn(logits, target)
    first.backward()
    with torch.no_grad():
        stepped = logits - 5.0 * logits.grad
    assert loss_fn(stepped, target).item() < first.item()


def test_target_class_beyond_the_logits_is_a_clear_error():
    with pytest.raises(ValueError, match="target holds class 5"):
        DiceLoss()(uniform(2), torch.tensor([[[0, 5], [1, 0]]]))
