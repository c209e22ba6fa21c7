"""The confusion matrix and the metrics against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zeroseg_ros.tools.evaluation.metrics import IGNORE_INDEX, NO_PREDICTION, ConfusionMatrix, compute_metrics

# Pixel pairs (gt, pred), ignoring the 255: (0,0) (0,1) (1,1) (1,1) (2,0).
GT = np.array([[0, 0, 1], [1, 2, IGNORE_INDEX]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.int32)


def test_confusion_counts_pairs_and_skips_the_ignore_index() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(GT, PRED)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(matrix.counts, expected)


def test_metrics_match_hand_computation() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(GT, PRED)
    metrics = matrix.metrics()
    # TP (1, 2, 0); GT (2, 2, 1); predicted (2, 3, 0); union (3, 3, 1)
    np.testing.assert_allclose(metrics.iou, [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(metrics.acc, [0.5, 1.0, 0.0])
    assert metrics.miou == pytest.approx(1 / 3)
    assert metrics.aacc == pytest.approx(3 / 5)
    assert metrics.macc == pytest.approx(0.5)
    np.testing.assert_array_equal(metrics.gt_pixels, [2, 2, 1])
    np.testing.assert_array_equal(metrics.pred_pixels, [2, 3, 0])


def test_absent_class_is_nan_and_left_out_of_the_means() -> None:
    matrix = ConfusionMatrix(4)  # class 3 neither in the ground truth nor predicted
    matrix.update(GT, PRED)
    metrics = matrix.metrics()
    assert math.isnan(metrics.iou[3]) and math.isnan(metrics.acc[3])
    assert metrics.miou == pytest.approx(1 / 3)
    assert metrics.macc == pytest.approx(0.5)


def test_predicted_but_absent_class_counts_as_zero_iou() -> None:
    gt = np.array([[0, 0]], dtype=np.uint8)
    pred = np.array([[0, 1]])
    metrics = compute_metrics(_counts(2, gt, pred))
    np.testing.assert_allclose(metrics.iou, [0.5, 0.0])
    assert math.isnan(metrics.acc[1])
    assert metrics.miou == pytest.approx(0.25)


def test_pixels_without_prediction_are_misses_of_their_class_only() -> None:
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[NO_PREDICTION, 0, 1, NO_PREDICTION]])
    metrics = compute_metrics(_counts(2, gt, pred))
    np.testing.assert_allclose(metrics.iou, [0.5, 0.5])
    np.testing.assert_array_equal(metrics.pred_pixels, [1, 1])
    assert metrics.aacc == pytest.approx(0.5)


def test_accumulating_images_equals_one_big_image() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, size=(7, 9)).astype(np.uint8) for _ in range(3)]
    preds = [rng.integers(-1, 5, size=(7, 9)) for _ in range(3)]
    gts[1][2:4, :] = IGNORE_INDEX
    accumulated = ConfusionMatrix(5)
    for gt, pred in zip(gts, preds, strict=True):
        accumulated.update(gt, pred)
    whole = ConfusionMatrix(5)
    whole.update(np.concatenate(gts), np.concatenate(preds))
    np.testing.assert_array_equal(accumulated.counts, whole.counts)
    assert accumulated.counts.sum() == sum(int((g != IGNORE_INDEX).sum()) for g in gts)


def test_everything_ignored_gives_nan_scores() -> None:
    matrix = ConfusionMatrix(2)
    matrix.update(np.full((2, 2), IGNORE_INDEX, dtype=np.uint8), np.zeros((2, 2), dtype=np.int32))
    metrics = matrix.metrics()
    assert math.isnan(metrics.miou) and math.isnan(metrics.aacc)


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        (np.array([[3]], dtype=np.uint8), np.array([[0]]), "ground truth holds labels"),
        (np.array([[0]], dtype=np.uint8), np.array([[3]]), "prediction holds labels"),
        (np.zeros((2, 2), dtype=np.uint8), np.zeros((2, 3)), "differs from ground truth shape"),
    ],
)
def test_bad_labels_are_rejected(gt: np.ndarray, pred: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix(3).update(gt, pred)


def _counts(num_classes: int, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    matrix = ConfusionMatrix(num_classes)
    matrix.update(gt, pred)
    return matrix.counts
