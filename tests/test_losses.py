"""Tests for trainers.fit.losses against hand-computed overlap terms."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from trainers.fit.losses import DiceIoULoss, overlap_terms

BIG = 100.0  # sigmoid(100) == 1 and sigmoid(-100) ~ 4e-44 in float64


def dice_loss(logits: torch.Tensor, target: torch.Tensor, **options: object) -> torch.Tensor:
    return DiceIoULoss(1.0, 0.0, **options)(logits, target)


def iou_loss(logits: torch.Tensor, target: torch.Tensor, **options: object) -> torch.Tensor:
    return DiceIoULoss(0.0, 1.0, **options)(logits, target)


def binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    """One 2x2 image; sigmoid(logits) = [[.5, .5], [1, 0]] against target [[1, 0], [1, 0]].

    I = .5 + 1 = 1.5, P = .5 + .5 + 1 = 2, T = 2.
    """
    logits = torch.tensor([[[[0.0, 0.0], [BIG, -BIG]]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    return logits, target


def multiclass_case() -> tuple[torch.Tensor, torch.Tensor]:
    """One 1x2 image, 3 classes; logits = log(probs) so softmax gives probs exactly.

    pixel 0: probs [.5, .25, .25], target 0; pixel 1: probs [.2, .6, .2], target 1.
    Class 2 is absent from the target.
    """
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]], dtype=torch.float64)
    logits = probs.log().T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    return logits, target


# Multi-class terms: class 0: I=.5, P=.7, T=1; class 1: I=.6, P=.85, T=1; class 2: I=0, P=.45, T=0.
MC_DICE = 1 - (2.0 / 2.7 + 2.2 / 2.85 + 1.0 / 1.45) / 3  # (2I+1)/(P+T+1) per class
MC_IOU = 1 - (1.5 / 2.2 + 1.6 / 2.25 + 1.0 / 1.45) / 3  # (I+1)/(P+T-I+1) per class


def test_overlap_terms_binary_by_hand() -> None:
    inter, pred_sum, target_sum = overlap_terms(*binary_case())
    assert inter.shape == (1, 1)
    assert inter.item() == pytest.approx(1.5)
    assert pred_sum.item() == pytest.approx(2.0)
    assert target_sum.item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("loss_fn", "smooth", "expected"),
    [
        (dice_loss, 1.0, 0.2),  # 1 - (2*1.5 + 1) / (2 + 2 + 1) = 1 - 4/5
        (dice_loss, 0.0, 0.25),  # 1 - 3/4
        (iou_loss, 1.0, 2 / 7),  # 1 - (1.5 + 1) / (2 + 2 - 1.5 + 1) = 1 - 2.5/3.5
        (iou_loss, 0.0, 0.4),  # 1 - 1.5/2.5
    ],
)
def test_binary_loss_by_hand(
    loss_fn: Callable[..., torch.Tensor], smooth: float, expected: float
) -> None:
    assert loss_fn(*binary_case(), smooth=smooth).item() == pytest.approx(expected)


def test_binary_target_layouts_and_dtypes_agree() -> None:
    logits, target = binary_case()
    # (N, H, W) float, (N, 1, H, W) float, bool and int targets all mean the same mask.
    for variant in (target.unsqueeze(1), target.bool(), target.long().unsqueeze(1)):
        assert dice_loss(logits, variant).item() == pytest.approx(0.2)


def test_loss_is_per_image_mean() -> None:
    # Image 0 is the hand case (dice 4/5); image 1 has empty target and prediction ~0 -> 1/1.
    logits, target = binary_case()
    logits = torch.cat([logits, torch.full_like(logits, -BIG)])
    target = torch.cat([target, torch.zeros_like(target)])
    assert dice_loss(logits, target).item() == pytest.approx(1 - (0.8 + 1.0) / 2)


def test_batch_loss_scores_the_batch_terms_together() -> None:
    # The same two images pooled: I = 1.5, P = 2, T = 2 (image 1 adds ~0): (3 + 1) / (4 + 1).
    logits, target = binary_case()
    logits = torch.cat([logits, torch.full_like(logits, -BIG)])
    target = torch.cat([target, torch.zeros_like(target)])
    assert dice_loss(logits, target, batch=True).item() == pytest.approx(1 - 4 / 5)
    assert iou_loss(logits, target, batch=True).item() == pytest.approx(1 - 2.5 / 3.5)
    # An image that predicts mass where its target is empty is no longer scored 1/3 on its own.
    empty = torch.zeros(1, 1, 2, 2, dtype=torch.float64)  # P = 2, T = 0
    pooled = dice_loss(torch.cat([logits[:1], empty]), target, batch=True).item()
    assert pooled == pytest.approx(1 - 4 / 7)  # I = 1.5, P = 4, T = 2


def test_perfect_prediction_gives_zero_loss() -> None:
    target = torch.tensor([[[1, 0], [0, 1]]])
    binary_logits = (target * 2 - 1).unsqueeze(1).double() * BIG
    assert dice_loss(binary_logits, target).item() == pytest.approx(0.0, abs=1e-12)
    assert iou_loss(binary_logits, target).item() == pytest.approx(0.0, abs=1e-12)
    classes = torch.tensor([[[0, 1], [2, 1]]])
    mc_logits = torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).double() * BIG
    assert dice_loss(mc_logits, classes).item() == pytest.approx(0.0, abs=1e-12)
    assert iou_loss(mc_logits, classes).item() == pytest.approx(0.0, abs=1e-12)


def test_empty_target_and_empty_prediction_give_zero_loss() -> None:
    # P ~ 4e-44, T = 0, I = 0: (0 + 1) / (P + 1) == 1 for either score.
    logits = torch.full((1, 1, 2, 2), -BIG, dtype=torch.float64)
    target = torch.zeros(1, 2, 2)
    assert dice_loss(logits, target).item() == pytest.approx(0.0)
    assert iou_loss(logits, target).item() == pytest.approx(0.0)


def test_empty_target_with_predicted_mass() -> None:
    # sigmoid(0) = .5 on 4 pixels: p = 2, score = smooth / (p + smooth) = 1/3 for dice and iou.
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    target = torch.zeros(1, 2, 2)
    assert dice_loss(logits, target).item() == pytest.approx(2 / 3)
    assert iou_loss(logits, target).item() == pytest.approx(2 / 3)


def test_all_foreground_target() -> None:
    # sigmoid(0) = .5 on 4 pixels, target all 1: I = 2, P = 2, T = 4.
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    target = torch.ones(1, 2, 2)
    assert dice_loss(logits, target).item() == pytest.approx(1 - 5 / 7)  # (4 + 1) / (6 + 1)
    assert iou_loss(logits, target).item() == pytest.approx(1 - 3 / 5)  # (2 + 1) / (4 + 1)


def test_smooth_zero_both_empty_is_zero_not_nan() -> None:
    # sigmoid(-1000) underflows to exactly 0, so P = T = I = 0 and the ratio is 0/0 := 1.
    logits = torch.full((1, 1, 2, 2), -1000.0, requires_grad=True)
    target = torch.zeros(1, 2, 2)
    for loss_fn in (dice_loss, iou_loss):
        loss = loss_fn(logits, target, smooth=0.0)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_smooth_zero_both_empty_image_in_batch() -> None:
    # Image 0: hand case, dice 3/4 at smooth 0; image 1 both empty -> 1. Loss 1 - 1.75/2.
    logits, target = binary_case()
    logits = torch.cat([logits, torch.full_like(logits, -1000.0)])
    target = torch.cat([target, torch.zeros_like(target)])
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.125)


def test_multiclass_with_class_absent_from_target() -> None:
    logits, target = multiclass_case()
    inter, pred_sum, target_sum = overlap_terms(logits, target)
    torch.testing.assert_close(inter, torch.tensor([[0.5, 0.6, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(pred_sum, torch.tensor([[0.7, 0.85, 0.45]], dtype=torch.float64))
    torch.testing.assert_close(target_sum, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    assert dice_loss(logits, target).item() == pytest.approx(MC_DICE)
    assert iou_loss(logits, target).item() == pytest.approx(MC_IOU)


@pytest.mark.parametrize("ignore_index", [255, -1])
def test_ignore_index_pixels_are_excluded(ignore_index: int) -> None:
    # A third, ignored pixel appended to the hand case must leave the hand values unchanged.
    logits, target = multiclass_case()
    target = torch.cat([target, torch.tensor([[[ignore_index]]])], dim=2)
    for extra in ([5.0, 0.0, 0.0], [0.0, 0.0, 9.0]):
        padded = torch.cat([logits, torch.tensor(extra).double().reshape(1, 3, 1, 1)], dim=3)
        assert dice_loss(padded, target, ignore_index=ignore_index).item() == pytest.approx(MC_DICE)
        assert iou_loss(padded, target, ignore_index=ignore_index).item() == pytest.approx(MC_IOU)


def test_ignore_index_in_binary_mode() -> None:
    # Hand case plus a column of ignored pixels (value 255) with a confident positive logit.
    logits, target = binary_case()
    logits = torch.cat([logits, torch.full((1, 1, 2, 1), BIG, dtype=torch.float64)], dim=3)
    target = torch.cat([target, torch.full((1, 2, 1), 255.0, dtype=torch.float64)], dim=2)
    assert dice_loss(logits, target, ignore_index=255).item() == pytest.approx(0.2)


def test_gradients_reach_logits_and_skip_ignored_pixels() -> None:
    logits, target = multiclass_case()
    target = torch.cat([target, torch.tensor([[[255]]])], dim=2)
    logits = torch.cat([logits, torch.zeros(1, 3, 1, 1, dtype=torch.float64)], dim=3)
    logits.requires_grad_(True)
    DiceIoULoss(ignore_index=255)(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[..., :2].abs().sum() > 0
    assert torch.equal(logits.grad[..., 2], torch.zeros(1, 3, 1, dtype=torch.float64))


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({}, 0.5 * 0.2 + 0.5 * 2 / 7),  # default equal weights
        ({"dice_weight": 1.0, "iou_weight": 2.0}, 0.2 + 2 * 2 / 7),
        ({"dice_weight": 1.0, "iou_weight": 0.0}, 0.2),
    ],
)
def test_dice_iou_loss_weights(weights: dict[str, float], expected: float) -> None:
    assert DiceIoULoss(**weights)(*binary_case()).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "weights",
    [{"dice_weight": -0.1}, {"iou_weight": -1.0}, {"dice_weight": 0.0, "iou_weight": 0.0}],
)
def test_dice_iou_loss_rejects_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        DiceIoULoss(**weights)


@pytest.mark.parametrize("smooth", [-1.0, math.nan, math.inf])
def test_bad_smooth_raises(smooth: float) -> None:
    with pytest.raises(ValueError, match="smooth"):
        DiceIoULoss(smooth=smooth)


def test_logits_of_wrong_rank_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\), got \(2, 2\)"):
        dice_loss(torch.zeros(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize("classes", [1, 3])
def test_a_volume_s_loss_sums_over_all_its_voxels(classes: int) -> None:
    """A volume N x C x D x H x W scores as the image N x C x (D*H) x W of its slices stacked:
    the terms are sums over every spatial axis, not means of per-slice ratios."""
    torch.manual_seed(0)
    logits = torch.randn(2, classes, 3, 4, 5)
    target = torch.randint(0, max(classes, 2), (2, 3, 4, 5))
    loss = DiceIoULoss()
    stacked = loss(logits.reshape(2, classes, 12, 5), target.reshape(2, 12, 5).clone())
    assert loss(logits, target).item() == pytest.approx(stacked.item(), abs=1e-6)
    # and a slice-wise mean would differ: the volume is one ratio per class
    per_slice = torch.stack([loss(logits[:, :, d], target[:, d]) for d in range(3)]).mean()
    assert abs(loss(logits, target).item() - per_slice.item()) > 1e-4


def test_non_float_logits_raise() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        dice_loss(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))


def test_binary_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 2\) or \(1, 2, 2\).*got \(1, 2, 3\)"):
        dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 3))


def test_multiclass_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*got \(1, 1, 2, 2\)"):
        dice_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))


def test_binary_target_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\].*got \[2\.0\]"):
        dice_loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[1.0, 2.0]]]))


def test_multiclass_bad_class_index_raises() -> None:
    logits, _ = multiclass_case()
    with pytest.raises(ValueError, match=r"\[0, 3\).*got \[3\]"):
        dice_loss(logits, torch.tensor([[[0, 3]]]))
    # 255 is only allowed when it is the ignore_index.
    with pytest.raises(ValueError, match=r"got \[255\]"):
        dice_loss(logits, torch.tensor([[[0, 255]]]), ignore_index=-1)


def test_multiclass_float_target_raises() -> None:
    logits, _ = multiclass_case()
    with pytest.raises(TypeError, match="integer class indices"):
        dice_loss(logits, torch.tensor([[[0.0, 1.0]]]))
