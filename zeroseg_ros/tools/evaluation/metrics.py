"""Segmentation metrics from an accumulated confusion matrix, computed the way mmsegmentation does.

The matrix counts pixels by (ground-truth class, predicted class). It has one column more than there are
classes: the last column holds pixels the segmenter left without a class (for instance under a probability
threshold on a dataset without a background class). Such pixels are misses of their ground-truth class and
false positives of none. Ground-truth pixels equal to the ignore index are not counted at all.

A class that appears neither in the ground truth nor in the predictions has an undefined IoU (NaN) and is
left out of the means, as mmsegmentation's ``IoUMetric`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
NO_PREDICTION = -1  # a predicted pixel that carries no dataset class


class ConfusionMatrix:
    """Pixel counts by (ground truth, prediction) over a whole dataset."""

    def __init__(self, num_classes: int, counts: np.ndarray | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        shape = (num_classes, num_classes + 1)
        if counts is None:
            counts = np.zeros(shape, dtype=np.int64)
        elif counts.shape != shape:
            raise ValueError(f"confusion counts must have shape {shape}, got {counts.shape}")
        self.counts = counts.astype(np.int64, copy=True)

    def update(self, ground_truth: np.ndarray, prediction: np.ndarray) -> None:
        """Add one image: ``ground_truth`` in [0, K) or the ignore index, ``prediction`` in [0, K) or -1."""
        if ground_truth.shape != prediction.shape:
            raise ValueError(
                f"prediction shape {prediction.shape} differs from ground truth shape {ground_truth.shape}"
            )
        gt = ground_truth.astype(np.int64).ravel()
        pred = prediction.astype(np.int64).ravel()
        valid = gt != IGNORE_INDEX
        gt, pred = gt[valid], pred[valid]
        k = self.num_classes
        if gt.size and (gt.min() < 0 or gt.max() >= k):
            raise ValueError(f"ground truth holds labels outside [0, {k}) and {IGNORE_INDEX}: {np.unique(gt)}")
        if pred.size and (pred.min() < NO_PREDICTION or pred.max() >= k):
            raise ValueError(f"prediction holds labels outside [0, {k}) and {NO_PREDICTION}")
        pred = np.where(pred == NO_PREDICTION, k, pred)
        self.counts += np.bincount(gt * (k + 1) + pred, minlength=k * (k + 1)).reshape(k, k + 1)

    def metrics(self) -> SegmentationMetrics:
        return compute_metrics(self.counts)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Scores in [0, 1]; per-class arrays hold NaN where a class is in neither ground truth nor prediction."""

    miou: float
    aacc: float  # pixel accuracy over all counted pixels
    macc: float  # mean of the per-class accuracies
    iou: np.ndarray  # (K,)
    acc: np.ndarray  # (K,) per-class recall
    gt_pixels: np.ndarray  # (K,)
    pred_pixels: np.ndarray  # (K,)


def compute_metrics(counts: np.ndarray) -> SegmentationMetrics:
    """mIoU, per-class IoU, aAcc and mAcc from a (K, K+1) confusion matrix (see the module docstring)."""
    k = counts.shape[0]
    if counts.shape != (k, k + 1):
        raise ValueError(f"confusion counts must have shape (K, K+1), got {counts.shape}")
    counts = counts.astype(np.float64)
    true_positive = np.diag(counts[:, :k])
    gt_pixels = counts.sum(axis=1)
    pred_pixels = counts[:, :k].sum(axis=0)
    union = gt_pixels + pred_pixels - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        acc = np.where(gt_pixels > 0, true_positive / gt_pixels, np.nan)
    total = gt_pixels.sum()
    return SegmentationMetrics(
        miou=_nanmean(iou),
        aacc=float(true_positive.sum() / total) if total > 0 else float("nan"),
        macc=_nanmean(acc),
        iou=iou,
        acc=acc,
        gt_pixels=gt_pixels.astype(np.int64),
        pred_pixels=pred_pixels.astype(np.int64),
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
