"""Each benchmark reader on a tiny synthetic dataset written in the standard on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.tools.evaluation.datasets import DATASETS, DatasetSpec, open_dataset, reduce_zero_label
from zeroseg_ros.tools.evaluation.metrics import IGNORE_INDEX

HEIGHT, WIDTH = 32, 48
# Sample ids per dataset, as they appear in the split file or file names (Cityscapes: city/frame).
SAMPLE_IDS = {
    "voc21": ["2007_000033", "2007_000042"],
    "voc20": ["2007_000033", "2007_000042"],
    "context60": ["2008_000002", "2008_000003"],
    "context59": ["2008_000002", "2008_000003"],
    "coco-object": ["000000000139", "000000000285"],
    "coco-stuff": ["000000000139", "000000000285"],
    "cityscapes": ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"],
    "ade20k": ["ADE_val_00000001", "ADE_val_00000002"],
}


def raw_label(spec: DatasetSpec, seed: int) -> np.ndarray:
    """A label image as stored on disk: stored ids in range for the dataset, with an ignored band."""
    stored_classes = spec.num_classes + (1 if spec.reduce_zero_label else 0)
    rng = np.random.default_rng(seed)
    label = rng.integers(0, stored_classes, size=(HEIGHT, WIDTH)).astype(np.uint8)
    label[:, :3] = IGNORE_INDEX
    label[0, 3] = 0
    label[0, 4] = stored_classes - 1
    return label


def write_layout(root: Path, name: str, label_mode: str = "P") -> dict[str, np.ndarray]:
    """Write ``name``'s validation split (two samples) under ``root``; return the stored labels by id."""
    spec = DATASETS[name]
    labels = {}
    for seed, sample_id in enumerate(SAMPLE_IDS[name]):
        image_path = root / spec.image_dir / f"{sample_id}{spec.image_suffix}"
        label_path = root / spec.label_dir / f"{sample_id}{spec.label_suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(100 + seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(image_path)
        labels[sample_id] = raw_label(spec, seed)
        label = Image.fromarray(labels[sample_id])
        if label_mode == "P":  # VOC and Context store palette PNGs; the reader must use the indices
            label = label.convert("P")
            label.putpalette(list(np.random.default_rng(7).integers(0, 256, 768, dtype=np.uint8)))
        label.save(label_path)
    if spec.split_file:
        split = root / spec.split_file
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("\n".join(SAMPLE_IDS[name]) + "\n")
    return labels


@pytest.mark.parametrize("name", list(DATASETS))
def test_reader_lists_the_split_and_loads_image_and_labels(tmp_path: Path, name: str) -> None:
    stored = write_layout(tmp_path, name, label_mode="P" if name in ("voc21", "context60") else "L")
    dataset = open_dataset(name, tmp_path)
    assert dataset.ids == SAMPLE_IDS[name]
    assert len(dataset) == 2
    for sample_id in dataset.ids:
        image, label = dataset.load(sample_id)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert label.shape == (HEIGHT, WIDTH) and label.dtype == np.uint8
        raw = stored[sample_id]
        if dataset.spec.reduce_zero_label:
            np.testing.assert_array_equal(label[raw == 0], IGNORE_INDEX)
            kept = (raw != 0) & (raw != IGNORE_INDEX)
            np.testing.assert_array_equal(label[kept], raw[kept] - 1)
        else:
            np.testing.assert_array_equal(label, raw)
        np.testing.assert_array_equal(label[:, :3], IGNORE_INDEX)
        valid = label[label != IGNORE_INDEX]
        assert valid.max() == dataset.spec.num_classes - 1


def test_voc20_and_context59_drop_the_background_class() -> None:
    raw = np.array([[0, 1, 20, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(raw), [[255, 0, 19, 255]])


@pytest.mark.parametrize(("name", "parent"), [("voc21", "VOCdevkit/VOC2012"), ("ade20k", "ADEChallengeData2016")])
def test_root_may_be_the_parent_of_the_usual_folder(tmp_path: Path, name: str, parent: str) -> None:
    write_layout(tmp_path / parent, name)
    assert open_dataset(name, tmp_path).root == tmp_path / parent


def test_missing_layout_says_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt"):
        open_dataset("voc21", tmp_path)


def test_missing_root_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        open_dataset("voc21", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unknown dataset 'kitti'"):
        open_dataset("kitti", tmp_path)


def test_missing_split_file(tmp_path: Path) -> None:
    write_layout(tmp_path, "voc21")
    (tmp_path / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(ConfigError, match=r"split file .* is missing"):
        open_dataset("voc21", tmp_path)


def test_label_outside_the_dataset_classes_is_reported(tmp_path: Path) -> None:
    write_layout(tmp_path, "cityscapes", label_mode="L")
    dataset = open_dataset("cityscapes", tmp_path)
    sample_id = dataset.ids[0]
    label = np.full((HEIGHT, WIDTH), 33, dtype=np.uint8)  # a raw Cityscapes id, not a train id
    Image.fromarray(label).save(dataset.label_path(sample_id))
    with pytest.raises(ConfigError, match=r"labels \[33\] are not classes of cityscapes"):
        dataset.load(sample_id)


def test_label_of_another_size_is_reported(tmp_path: Path) -> None:
    write_layout(tmp_path, "ade20k", label_mode="L")
    dataset = open_dataset("ade20k", tmp_path)
    Image.fromarray(np.zeros((HEIGHT + 1, WIDTH), dtype=np.uint8)).save(dataset.label_path(dataset.ids[1]))
    with pytest.raises(ConfigError, match="differs from image size"):
        dataset.load(dataset.ids[1])


def test_missing_label_file_is_reported_when_opening(tmp_path: Path) -> None:
    write_layout(tmp_path, "coco-stuff", label_mode="L")
    dataset = open_dataset("coco-stuff", tmp_path)
    dataset.label_path(dataset.ids[0]).unlink()
    with pytest.raises(ConfigError, match=r"label file .* is missing"):
        open_dataset("coco-stuff", tmp_path)


def test_class_names_follow_the_vocabulary() -> None:
    assert DATASETS["voc21"].class_names()[:3] == ["background", "aeroplane", "bicycle"]
    assert DATASETS["voc20"].class_names()[0] == "aeroplane"
    assert DATASETS["coco-object"].class_names()[:2] == ["background", "person"]
    for spec in DATASETS.values():
        assert len(spec.class_names()) == spec.num_classes
