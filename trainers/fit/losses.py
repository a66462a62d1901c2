"""The soft Dice + IoU loss the trainer uses, computed from logits (`DiceIoULoss`; Dice alone is
`DiceIoULoss(1, 0)`, IoU alone `DiceIoULoss(0, 1)`).

Binary mode: logits (N, 1, H, W) go through a sigmoid and the target holds values in [0, 1].
Multi-class mode: logits (N, C, H, W) with C >= 2 go through a softmax over the class dimension
and the target holds integer class indices. Volumes work alike: (N, C, D, H, W), any number of
spatial axes after the class axis, the sums taken over all of them. Pixels equal to
``ignore_index`` count towards neither the prediction nor the target.

Empty-mask rule: the score is computed per image and per class, then averaged. With
``smooth > 0`` an image whose target and prediction are both empty for a class scores 1 (loss
0), and an empty target with predicted mass ``p`` scores ``smooth / (p + smooth)``. With
``smooth == 0`` the both-empty ratio would be 0/0; it is defined as 1 (perfect agreement),
never NaN. An image whose pixels are all ignored is both-empty for every class.

With ``batch=True`` the terms are summed over the batch before the ratios (nnU-Net's batch
Dice): a class absent from one crop is scored by the whole batch, so a thin, rare class (the
object target's contacts) is not rewarded for being predicted nowhere in the many crops without
it. The trainer pools the batch for the object target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import one_hot

__all__ = ["DiceIoULoss", "check_target_values", "overlap_terms"]

OverlapTerms = tuple[Tensor, Tensor, Tensor]


def overlap_terms(
    logits: Tensor, target: Tensor, *, ignore_index: int | None = None, check_values: bool = True
) -> OverlapTerms:
    """Soft intersection I, prediction sum P and target sum T per image and class.
    `check_values=False` skips the check of the target's values (each a host sync on a GPU):
    for a trainer that checked them on the CPU (`check_target_values`).

    Shape:
        - logits: (N, 1, H, W) for binary, (N, C, H, W) with C >= 2 for multi-class.
        - target: binary (N, 1, H, W) or (N, H, W) with values in [0, 1]; multi-class
          (N, H, W) integer class indices in [0, C) or equal to ignore_index.
        - output: I, P and T, each (N, C).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {_describe(logits)}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a tensor, got {type(target).__name__}")
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    if logits.dim() < 3:
        raise ValueError(
            f"logits must have shape (N, C, H, W) or (N, C, D, H, W), got {tuple(logits.shape)}"
        )
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits)
        onehot, valid = _binary_target(target, logits.shape, ignore_index, check_values)
    else:
        probs = torch.softmax(logits, dim=1)
        onehot, valid = _multiclass_target(target, logits.shape, ignore_index, check_values)
    onehot = onehot.to(probs.dtype)
    if valid is not None:
        probs = probs * valid
        onehot = onehot * valid
    spatial = tuple(range(2, logits.dim()))
    return (probs * onehot).sum(spatial), probs.sum(spatial), onehot.sum(spatial)


def _describe(x: object) -> str:
    return f"tensor of dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def check_target_values(target: Tensor, num_classes: int, ignore_index: int | None = None) -> None:
    """A ValueError unless `target` (N x H x W) holds values the loss takes for `num_classes`
    output channels (1: binary, in [0, 1]); run it on the CPU before the batch moves."""
    if num_classes == 1:
        _check_binary_values(target, ignore_index)
    else:
        _check_class_values(target, num_classes, ignore_index)


def _check_binary_values(full: Tensor, ignore_index: int | None) -> None:
    counted = full if ignore_index is None else full[full != ignore_index]
    in_range = (counted >= 0) & (counted <= 1)
    if not in_range.all():
        raise ValueError(
            f"binary target values must lie in [0, 1] (or equal ignore_index={ignore_index}), "
            f"got {counted[~in_range].unique()[:8].tolist()}"
        )


def _check_class_values(target: Tensor, c: int, ignore_index: int | None) -> None:
    bad = (target < 0) | (target >= c)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bad.any():
        raise ValueError(
            f"multi-class target values must lie in [0, {c}) (or equal "
            f"ignore_index={ignore_index}), got {target[bad].unique()[:8].tolist()}"
        )


def _binary_target(
    target: Tensor, shape: torch.Size, ignore_index: int | None, check_values: bool
) -> tuple[Tensor, Tensor | None]:
    """Target as (N, 1, *spatial) plus the mask of pixels that count (None: all)."""
    n, _, *spatial = shape
    full = target.unsqueeze(1) if target.dim() == len(shape) - 1 else target
    if full.shape != shape:
        raise ValueError(
            f"binary target must have shape {(n, 1, *spatial)} or {(n, *spatial)} to match "
            f"logits {tuple(shape)}, got {tuple(target.shape)}"
        )
    if check_values:
        _check_binary_values(full, ignore_index)
    return full, None if ignore_index is None else full != ignore_index


def _multiclass_target(
    target: Tensor, shape: torch.Size, ignore_index: int | None, check_values: bool
) -> tuple[Tensor, Tensor | None]:
    """One-hot target (N, C, *spatial) plus the (N, 1, *spatial) mask of pixels that count
    (None: all)."""
    n, c, *spatial = shape
    if target.shape != (n, *spatial):
        raise ValueError(
            f"multi-class target must have shape {(n, *spatial)} to match logits "
            f"{tuple(shape)}, got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"multi-class target must hold integer class indices, got {target.dtype}")
    if check_values:
        _check_class_values(target, c, ignore_index)
    valid = None if ignore_index is None else target != ignore_index
    indices = target if valid is None else target.masked_fill(~valid, 0)
    onehot = one_hot(indices.long(), c).movedim(-1, 1)
    return onehot, None if valid is None else valid.unsqueeze(1)


def _check_smooth(smooth: float) -> float:
    if isinstance(smooth, bool) or not isinstance(smooth, int | float):
        raise TypeError(f"smooth must be a number, got {type(smooth).__name__}")
    if not (math.isfinite(smooth) and smooth >= 0):
        raise ValueError(f"smooth must be a finite number >= 0, got {smooth!r}")
    return float(smooth)


def _score(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 / 0 (both empty and smooth == 0) defined as 1; gradients stay finite."""
    defined = den > 0
    safe_den = torch.where(defined, den, torch.ones_like(den))
    return torch.where(defined, num / safe_den, torch.ones_like(num))


def _dice_from_terms(terms: OverlapTerms, smooth: float) -> Tensor:
    inter, pred_sum, target_sum = terms
    return 1 - _score(2 * inter + smooth, pred_sum + target_sum + smooth).mean()


def _iou_from_terms(terms: OverlapTerms, smooth: float) -> Tensor:
    inter, pred_sum, target_sum = terms
    return 1 - _score(inter + smooth, pred_sum + target_sum - inter + smooth).mean()


def check_loss_weights(dice_weight: float, iou_weight: float) -> None:
    """ValueError unless both weights are finite, >= 0, and not both 0."""
    for name, weight in (("dice_weight", dice_weight), ("iou_weight", iou_weight)):
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
    if dice_weight == 0 and iou_weight == 0:
        raise ValueError("dice_weight and iou_weight are both 0; at least one must be > 0")


class DiceIoULoss(nn.Module):
    """dice_weight * soft Dice loss + iou_weight * soft IoU loss, from shared overlap terms.

    Dice loss is 1 - mean over images and classes of (2I + smooth) / (P + T + smooth); IoU loss
    1 - mean of (I + smooth) / (P + T - I + smooth). Weights must be >= 0 and not both 0.
    `batch`: I, P and T summed over the batch first (one ratio per class).

    Shape:
        - logits: (N, 1, H, W) for binary, (N, C, H, W) with C >= 2 for multi-class.
        - target: binary (N, 1, H, W) or (N, H, W) in [0, 1]; multi-class (N, H, W) indices.
        - output: scalar.
    """

    def __init__(
        self,
        dice_weight: float = 0.5,
        iou_weight: float = 0.5,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        check_values: bool = True,
        batch: bool = False,
    ) -> None:
        super().__init__()
        self.check_values = check_values  # False: the caller checks targets on the CPU
        self.batch = batch  # the ratios of the whole batch's terms, not the mean of each image's
        self.smooth = _check_smooth(smooth)
        self.ignore_index = ignore_index
        check_loss_weights(dice_weight, iou_weight)
        self.dice_weight = float(dice_weight)
        self.iou_weight = float(iou_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        terms = overlap_terms(
            logits, target, ignore_index=self.ignore_index, check_values=self.check_values
        )
        if self.batch:
            terms = tuple(term.sum(0, keepdim=True) for term in terms)
        dice = _dice_from_terms(terms, self.smooth)
        iou = _iou_from_terms(terms, self.smooth)
        return self.dice_weight * dice + self.iou_weight * iou

    def extra_repr(self) -> str:
        return (
            f"dice_weight={self.dice_weight}, iou_weight={self.iou_weight}, "
            f"smooth={self.smooth}, ignore_index={self.ignore_index}, batch={self.batch}"
        )
