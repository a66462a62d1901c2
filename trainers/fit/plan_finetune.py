"""The plan of a fine-tune (`--finetune WEIGHTS`): a model that knows its task, a few pairs of
new images, a short time box. Like the plan of a run from scratch it prints one reason per
choice (explicit flags still win):

    settings, reasons = finetune_plan(base, fingerprint(source), Hardware.detect(), timer=timer)

- **precision** timed as the plan times it (bf16 where it is faster on this machine);
- **pairs**: with fewer than FEW_PAIRS, none is held back (every pair trains, and the Dice
  reported is the training pairs' own); from FEW_PAIRS on, HELD_BACK of them validate;
- **crops**: enough per image and pass to cover each image (at most MAX_PATCHES);
- **learning rate** FINETUNE_LR after WARMUP_STEPS of linear warm-up: chosen on the brightfield
  training images of DSB 2018 not fine-tuned on (3 pairs, 90 s, the Dice of 10 images;
  `benchmarks/bench_finetune.py --dsb ... --split val --lr X`). With the loss scored crop by
  crop 3e-3 led (0.719 against 0.627 for 1e-3; then 0.776, 0.714, 0.699 against 0.197, 0.253,
  0.221); with the loss pooled over the batch, which stopped the collapse a large step had
  fought, 1e-3 leads: 0.833, 0.829 against 0.746, 0.734 for 3e-3 and 0.725, 0.635 for 1e-2
  (bf16, 490-580 steps), 0.837, 0.839 against 0.774, 0.784 (fp32, 320-390 steps; 2026-12-07);
- **the loss pooled over the batch** (batch Dice): a few new images give mostly empty crops,
  which, scored alone, barely penalize false positives (DSB 2018 brightfield, 90 s, the 10
  selection images: 0.778, 0.764, 0.791 pooled against 0.724, 0.258, 0.211 crop by crop);
- **scale**: the new images brought to the object size the base learned (its `object_width`
  at its scale, saved in its config.json, against the new masks' median object width), as
  nnU-Net resamples to a target spacing; never enlarged (`--scale` up to 1.5 does that): on DSB
  2018 brightfield, 20.6 px nuclei against the base's 27.8, scale 1.36 scored 0.407, 0.591,
  0.636, 0.538 where scale 1 scored 0.383, 0.745, 0.736 (90 s each, 2026-12-06); a base without
  an object width keeps its scale.
"""

from __future__ import annotations

import math
from typing import Any

from trainers.data.fingerprint import Fingerprint
from trainers.fit.plan_rules import (
    MIN_SCALE,
    Candidate,
    Hardware,
    Timer,
    batch_for,
    covering_patches,
    model_width,
    precision_for,
)

FEW_PAIRS = 5  # below this many pairs none is held back
HELD_BACK = 0.2  # from FEW_PAIRS on, this share of the pairs validates
MAX_PATCHES = 64
FINETUNE_LR = 1e-3
WARMUP_STEPS = 20


def finetune_plan(
    base: dict[str, Any], f: Fingerprint, hardware: Hardware, *, timer: Timer | None = None
) -> tuple[dict[str, Any], list[str]]:
    """TrainConfig settings for fine-tuning the model whose settings are `base` (its config:
    model, model_kwargs, image_size, scale, object_width) on data set `f`, and one reason per
    choice."""
    reasons = [f"hardware: {hardware.describe()}"]
    crop = int(base.get("image_size", 256))
    scale = _scale(base, f, reasons)
    patches = covering_patches(f, crop, scale, reasons, most=MAX_PATCHES)
    kwargs = base.get("model_kwargs", {})
    batch = batch_for(hardware, crop, model_width(kwargs))
    candidate = Candidate(base["model"], kwargs, crop, batch)
    precision = precision_for(hardware, candidate, timer, reasons)
    if f.images < FEW_PAIRS:
        held_back = 0.0
        reasons.append(
            f"{f.images} pair(s), fewer than {FEW_PAIRS}: none is held back, every pair trains, "
            "and the Dice reported is the training pairs' own (not a validation figure)"
        )
    else:
        held_back = HELD_BACK
        reasons.append(f"{f.images} pairs: {HELD_BACK:.0%} held back to validate")
    reasons.append(
        f"learning rate {FINETUNE_LR:g} after {WARMUP_STEPS} steps of warm-up: with the loss "
        "pooled over the batch it taught the base new images best (measured, docs/training.md)"
    )
    reasons.append(
        "the loss pooled over the batch (batch Dice): most crops of a few new images hold "
        "little or no foreground, and a crop scored alone then barely penalizes what is "
        "predicted in it (measured, docs/training.md)"
    )
    settings = {
        "batch_dice": True,
        "scale": scale,
        "object_width": round(_width(f), 2),
        "patches_per_image": patches,
        "batch_size": batch,
        "precision": precision,
        "val_fraction": held_back,
        "lr": FINETUNE_LR,
        "warmup": WARMUP_STEPS,
    }
    return settings, reasons


def _width(f: Fingerprint) -> float:
    return max(f.width.values(), default=0.0)


def _scale(base: dict[str, Any], f: Fingerprint, reasons: list[str]) -> float:
    """The scale at which the new images' objects are as wide as those the base learned."""
    base_scale = float(base.get("scale", 1.0))
    base_width, width = float(base.get("object_width") or 0.0), _width(f)
    if not base_width or not width:
        missing = "its config has no object width" if not base_width else "no objects in the masks"
        reasons.append(f"scale {base_scale:g}: the base's own ({missing})")
        return base_scale
    learned = base_width * base_scale
    wanted = math.ceil(learned / width * 100) / 100
    scale = min(1.0, max(MIN_SCALE, wanted))
    bounded = "" if scale == wanted else f" (within {MIN_SCALE:g}-1: {wanted:g} wanted)"
    reasons.append(
        f"scale {scale:g}{bounded}: the new images' objects are {width:.1f} px wide and the base "
        f"learned them at {learned:.1f} px ({base_width:.1f} px at its scale {base_scale:g}); "
        f"at this scale they are {width * scale:.1f} px"
    )
    return scale
