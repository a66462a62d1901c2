"""Figures of an evaluation: the precision-recall curve and the error-map grid (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.scores.metrics import PRCurve

# Error map colours: true positive, false positive, false negative (outside the ROI: dark grey).
TP, FP, FN = (0, 190, 0), (230, 40, 40), (40, 110, 255)
OUTSIDE = (40, 40, 40)


def error_map(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """An H x W x 3 uint8 image: TP green, FP red, FN blue, true negatives black."""
    image = np.zeros((*pred.shape, 3), dtype=np.uint8)
    image[pred & target] = TP
    image[pred & ~target] = FP
    image[~pred & target] = FN
    if roi is not None:
        image[~roi] = OUTSIDE
    return image


def _figure(rows: int, cols: int, size: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    return plt, figure, axes


def pr_curve_plot(curve: PRCurve, path: Path, title: str = "") -> None:
    """Precision against recall, with AP in the legend and the best-F1 point marked."""
    plt, figure, axes = _figure(1, 1, 4.5)
    ax = axes[0, 0]
    ax.step(
        curve.recall, curve.precision, where="post", label=f"AP = {curve.average_precision:.3f}"
    )
    best = int(np.argmin(np.abs(curve.thresholds - curve.best_threshold)))
    ax.plot(
        curve.recall[best],
        curve.precision[best],
        "o",
        label=f"best F1 {curve.best_f1:.3f} at {curve.best_threshold:.2f}",
    )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    palette = np.array([(0, 0, 0), (255, 255, 255), FP, FN, TP])
    return palette[labels % len(palette)].astype(np.uint8)


def error_grid(shown: list[tuple], path: Path, *, binary: bool) -> None:
    """One row per image: image | target | prediction | error map (binary) or nothing else."""
    if not shown:
        return
    columns = ["image", "target", "prediction", "error map (TP green, FP red, FN blue)"]
    columns = columns if binary else columns[:3]
    plt, figure, axes = _figure(len(shown), len(columns))
    for row, (image, target, pred, roi, name) in enumerate(shown):
        if binary:
            panels = [image.squeeze(), target == 1, pred, error_map(pred, target == 1, roi)]
        else:
            panels = [image.squeeze(), _labels_rgb(target), _labels_rgb(pred)]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# Overlays: the same colours for target and prediction, one per foreground class.
