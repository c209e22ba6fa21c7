"""Readers for the benchmark datasets in the on-disk layouts the training-free papers use.

The layouts are those of mmsegmentation's data preparation (which SCLIP, NACLIP and ClearCLIP follow); the
label PNGs hold class indices (palette or grey), 255 is ignored. Each reader returns the validation split in
a fixed order, so a run can stop and resume by sample id.

=============  ==========================================================================================
voc21, voc20   ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``, ``ImageSets/Segmentation/val.txt``
context60/59   ``JPEGImages/<id>.jpg``, ``SegmentationClassContext/<id>.png``,
               ``ImageSets/SegmentationContext/val.txt``
coco-object    ``images/val2017/<id>.jpg``, ``annotations/val2017/<id>_instanceTrainIds.png``
coco-stuff     ``images/val2017/<id>.jpg``, ``annotations/val2017/<id>_labelTrainIds.png``
cityscapes     ``leftImg8bit/val/<city>/<id>_leftImg8bit.png``,
               ``gtFine/val/<city>/<id>_gtFine_labelTrainIds.png``
ade20k         ``images/validation/<id>.jpg``, ``annotations/validation/<id>.png``
=============  ==========================================================================================

voc20, context59 and ade20k drop label 0 ("reduce zero label"): 0 becomes ignored and every other label moves
down by one. The root may also be a parent folder holding the usual top folder (``VOCdevkit/VOC2012``,
``VOC2012``, ``VOCdevkit/VOC2010``, ``VOC2010``, ``ADEChallengeData2016``, ``coco_stuff164k``,
``cityscapes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.vocab import has_background, load_vocabulary
from zeroseg_ros.tools.evaluation.metrics import IGNORE_INDEX


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark keeps its files and how its labels read."""

    name: str
    title: str
    num_classes: int
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    split_file: str | None  # list of ids; None: every image in image_dir (recursively)
    reduce_zero_label: bool
    root_candidates: tuple[str, ...]  # sub-folders of --root tried when the layout is not at --root itself

    @property
    def has_background(self) -> bool:
        """Class 0 is a background class that the segmenter reports as label 0."""
        return has_background(self.name)

    def class_names(self) -> list[str]:
        """Display name per class id: the first synonym, and 'background' for a background class."""
        names = [line.split("|")[0] for line in load_vocabulary(self.name)]
        if self.has_background:
            names[0] = "background"
        return names


_VOC = ("VOCdevkit/VOC2012", "VOC2012")
_CONTEXT = ("VOCdevkit/VOC2010", "VOC2010")
_COCO = ("coco_stuff164k", "coco_object", "coco")
_VOC_FILES = {
    "image_dir": "JPEGImages",
    "label_dir": "SegmentationClass",
    "image_suffix": ".jpg",
    "label_suffix": ".png",
    "split_file": "ImageSets/Segmentation/val.txt",
    "root_candidates": _VOC,
}
_CONTEXT_FILES = {
    **_VOC_FILES,
    "label_dir": "SegmentationClassContext",
    "split_file": "ImageSets/SegmentationContext/val.txt",
    "root_candidates": _CONTEXT,
}
_COCO_FILES = {
    "image_dir": "images/val2017",
    "label_dir": "annotations/val2017",
    "image_suffix": ".jpg",
    "split_file": None,
    "reduce_zero_label": False,
    "root_candidates": _COCO,
}
_SPECS = (
    DatasetSpec("voc21", "Pascal VOC 2012 val, with background", 21, reduce_zero_label=False, **_VOC_FILES),
    DatasetSpec("voc20", "Pascal VOC 2012 val, without background", 20, reduce_zero_label=True, **_VOC_FILES),
    DatasetSpec("context60", "Pascal Context val, with background", 60, reduce_zero_label=False, **_CONTEXT_FILES),
    DatasetSpec("context59", "Pascal Context val, without background", 59, reduce_zero_label=True, **_CONTEXT_FILES),
    DatasetSpec(
        "coco-object",
        "COCO-Object val2017 (background + 80 things)",
        81,
        label_suffix="_instanceTrainIds.png",
        **_COCO_FILES,
    ),
    DatasetSpec("coco-stuff", "COCO-Stuff 164k val2017", 171, label_suffix="_labelTrainIds.png", **_COCO_FILES),
    DatasetSpec(
        "cityscapes",
        "Cityscapes val (fine annotations)",
        19,
        image_dir="leftImg8bit/val",
        label_dir="gtFine/val",
        image_suffix="_leftImg8bit.png",
        label_suffix="_gtFine_labelTrainIds.png",
        split_file=None,
        reduce_zero_label=False,
        root_candidates=("cityscapes",),
    ),
    DatasetSpec(
        "ade20k",
        "ADE20K (ADEChallengeData2016) val",
        150,
        image_dir="images/validation",
        label_dir="annotations/validation",
        image_suffix=".jpg",
        label_suffix=".png",
        split_file=None,
        reduce_zero_label=True,
        root_candidates=("ADEChallengeData2016",),
    ),
)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


class SegmentationDataset:
    """The validation split of one benchmark: sample ids, and (image, ground truth) per id."""

    def __init__(self, spec: DatasetSpec, root: Path, ids: list[str]) -> None:
        self.spec = spec
        self.root = root
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, sample_id: str) -> Path:
        return self.root / self.spec.image_dir / f"{sample_id}{self.spec.image_suffix}"

    def label_path(self, sample_id: str) -> Path:
        return self.root / self.spec.label_dir / f"{sample_id}{self.spec.label_suffix}"

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The RGB image (HxWx3 uint8) and its ground truth (HxW uint8, class ids and 255)."""
        image = _read_image(self.image_path(sample_id), rgb=True)
        label = _read_image(self.label_path(sample_id), rgb=False)
        if label.ndim != 2:
            raise ConfigError(f"{self.label_path(sample_id)}: label image must hold one channel, got {label.shape}")
        if label.shape != image.shape[:2]:
            raise ConfigError(
                f"{sample_id}: label size {label.shape} differs from image size {image.shape[:2]} "
                f"({self.label_path(sample_id)})"
            )
        label = label.astype(np.uint8)
        if self.spec.reduce_zero_label:
            label = reduce_zero_label(label)
        stray = (label != IGNORE_INDEX) & (label >= self.spec.num_classes)
        if stray.any():
            raise ConfigError(
                f"{self.label_path(sample_id)}: labels {np.unique(label[stray]).tolist()} are not "
                f"classes of {self.spec.name} ({self.spec.num_classes} classes, {IGNORE_INDEX} ignored); "
                "is this the right dataset and the converted label file?"
            )
        return image, label


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmsegmentation's ``reduce_zero_label``: 0 becomes ignored, every other label moves down by one."""
    reduced = label.astype(np.int16) - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced.astype(np.uint8)


def open_dataset(name: str, root: str | Path) -> SegmentationDataset:
    """Find ``name``'s layout under ``root`` and list its validation split (clear errors when absent)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"dataset root {str(base)!r} is not a folder")
    found = _locate(spec, base)
    ids = _list_ids(spec, found)
    if not ids:
        raise ConfigError(f"{spec.name}: no validation samples found under {found}")
    dataset = SegmentationDataset(spec, found, ids)
    missing = [i for i in ids[:1] + ids[-1:] if not dataset.label_path(i).is_file()]
    if missing:
        raise ConfigError(f"{spec.name}: label file {dataset.label_path(missing[0])} is missing")
    return dataset


def _locate(spec: DatasetSpec, base: Path) -> Path:
    tried = [base, *(base / sub for sub in spec.root_candidates)]
    for candidate in tried:
        if (candidate / spec.image_dir).is_dir() and (candidate / spec.label_dir).is_dir():
            return candidate
    expected = ", ".join(p for p in (spec.image_dir, spec.label_dir, spec.split_file) if p)
    raise ConfigError(
        f"{spec.name}: expected {expected} under one of: {', '.join(str(p) for p in tried)}. "
        "See docs/evaluation.md for the layout and how to prepare it."
    )


def _list_ids(spec: DatasetSpec, root: Path) -> list[str]:
    if spec.split_file is not None:
        split = root / spec.split_file
        if not split.is_file():
            raise ConfigError(f"{spec.name}: split file {split} is missing")
        return [line.strip() for line in split.read_text().splitlines() if line.strip()]
    image_root = root / spec.image_dir
    suffix = spec.image_suffix
    return sorted(
        str(path.relative_to(image_root))[: -len(suffix)] for path in image_root.rglob(f"*{suffix}") if path.is_file()
    )


def _read_image(path: Path, rgb: bool) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB") if rgb else img)  # a writable copy
    except FileNotFoundError:
        raise ConfigError(f"file {path} is missing") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
