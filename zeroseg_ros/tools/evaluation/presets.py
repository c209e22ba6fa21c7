"""The evaluation protocol of each reference method on each benchmark, as named presets.

A preset is what the method's own repository sets for a dataset: the image's short side, the sliding window,
the logit scale, the background probability threshold, PAMR, the vocabulary file and (SCLIP on VOC21 only) an
area threshold. Sources, read in the repositories (configs/cfg_<dataset>.py and the segmentor's defaults):

* SCLIP     wangf3014/SCLIP@57fa9aa: short side 336 (COCO-Stuff 448, Cityscapes 560), window 224 / stride
            112, logit scale 40 (VOC21 65, Context60 and COCO-Object 50), threshold 0.1 on the three datasets
            with a background class, area threshold 0.1 on VOC21, no PAMR.
* NACLIP    sinahmr/NACLIP@8865082: as SCLIP but logit scale 40 everywhere, no area threshold, and PAMR (10
            steps, dilations 8 and 16) on, as in its README's results.
* ClearCLIP mc-lan/ClearCLIP@fd05ce4: short side 448, window 448 / stride 224 (Cityscapes window 224), logit
            scale 50, thresholds 0.5 / 0.15 / 0.4 on VOC21 / Context60 / COCO-Object, VOC21 words with a plain
            "background", fp16 weights. Its COCO-Stuff and ADE20K configs were not available: their settings
            here are the segmentor's defaults.
* MaskCLIP  as re-run in the SCLIP paper, under SCLIP's protocol.

Every method uses the 80 ImageNet templates. Settings given on the command line win over the preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zeroseg_ros.core.config import METHODS, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.vocab import has_background, load_vocabulary
from zeroseg_ros.tools.evaluation.datasets import DATASETS


@dataclass(frozen=True)
class Protocol:
    """How one method is evaluated on one dataset."""

    preset: str
    dataset: str
    segmenter: SegmenterConfig  # background_words already filled in from the vocabulary
    queries: tuple[str, ...]  # one per dataset class after the background class, '|' between synonyms
    vocabulary: str
    area_threshold: float | None = None  # SCLIP's: classes covering less of the foreground become background
    precision: str = "fp32"  # the precision the reference ran in (applied on CUDA only)

    def summary(self) -> dict[str, Any]:
        """The settings that decide the score, for reports and for checking a resumed run."""
        config = dataclasses.asdict(self.segmenter)
        config["background_words"] = list(config["background_words"])
        return {
            "preset": self.preset,
            "dataset": self.dataset,
            "vocabulary": self.vocabulary,
            "area_threshold": self.area_threshold,
            "precision": self.precision,
            "segmenter": config,
        }


# Per-dataset settings of each preset: SegmenterConfig fields, vocabulary, area_threshold and precision.
_SCLIP_BASE = {"short_side": 336, "slide_crop": 224, "slide_stride": 112, "logit_scale": 40.0}
_CLEARCLIP_BASE = {
    "short_side": 448,
    "slide_crop": 448,
    "slide_stride": 224,
    "logit_scale": 50.0,
    "precision": "fp16",
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "sclip": {
        "voc21": {"logit_scale": 65.0, "probability_threshold": 0.1, "area_threshold": 0.1},
        "context60": {"logit_scale": 50.0, "probability_threshold": 0.1},
        "coco-object": {"logit_scale": 50.0, "probability_threshold": 0.1},
        "voc20": {},
        "context59": {},
        "coco-stuff": {"short_side": 448},
        "cityscapes": {"short_side": 560},
        "ade20k": {},
    },
    "naclip": {
        "voc21": {"probability_threshold": 0.1},
        "context60": {"probability_threshold": 0.1},
        "coco-object": {"probability_threshold": 0.1},
        "voc20": {},
        "context59": {},
        "coco-stuff": {"short_side": 448},
        "cityscapes": {"short_side": 560},
        "ade20k": {},
    },
    "clearclip": {
        "voc21": {"probability_threshold": 0.5, "vocabulary": "voc21-clearclip"},
        "context60": {"probability_threshold": 0.15},
        "coco-object": {"probability_threshold": 0.4},
        "voc20": {},
        "context59": {},
        "coco-stuff": {},
        "cityscapes": {"slide_crop": 224, "slide_stride": 224},
        "ade20k": {},
    },
}
PRESETS["maskclip"] = {dataset: dict(settings) for dataset, settings in PRESETS["sclip"].items()}
_PRESET_BASE = {
    "sclip": _SCLIP_BASE,
    "naclip": {**_SCLIP_BASE, "pamr": True},
    "clearclip": _CLEARCLIP_BASE,
    "maskclip": _SCLIP_BASE,
}

OVERRIDABLE = (
    "method",
    "short_side",
    "slide_crop",
    "slide_stride",
    "logit_scale",
    "probability_threshold",
    "pamr",
    "templates",
    "area_threshold",
    "vocabulary",
)


def resolve_protocol(preset: str, dataset: str, overrides: dict[str, Any] | None = None) -> Protocol:
    """The protocol of ``preset`` on ``dataset`` with ``overrides`` (``None`` values are ignored) applied.

    ``overrides`` keys are those in ``OVERRIDABLE``; ``method`` defaults to the preset's own method.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = set(given) - set(OVERRIDABLE)
    if unknown:
        raise ConfigError(f"cannot override {sorted(unknown)}; overridable: {', '.join(OVERRIDABLE)}")

    settings: dict[str, Any] = {
        "method": preset,
        "templates": "imagenet80",
        "probability_threshold": 0.0,
        "pamr": False,
        # The references label every pixel from every class at full resolution: so does the evaluation.
        "exact_labels": True,
        "vocabulary": dataset,
        "area_threshold": None,
        "precision": "fp32",
    }
    settings.update(_PRESET_BASE[preset])
    settings.update(PRESETS[preset][dataset])
    settings.update(given)
    if settings["method"] not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {settings['method']!r}")

    vocabulary = settings.pop("vocabulary")
    area_threshold = settings.pop("area_threshold")
    precision = settings.pop("precision")
    classes = load_vocabulary(vocabulary)
    spec = DATASETS[dataset]
    if len(classes) != spec.num_classes or has_background(vocabulary) != spec.has_background:
        raise ConfigError(
            f"vocabulary {vocabulary!r} ({len(classes)} classes) does not fit dataset {dataset!r} "
            f"({spec.num_classes} classes, background class: {spec.has_background})"
        )
    if area_threshold is not None and not 0.0 <= area_threshold < 1.0:
        raise ConfigError(f"area_threshold must be in [0, 1), got {area_threshold}")
    if spec.has_background:
        background, queries = tuple(classes[0].split("|")), tuple(classes[1:])
    else:
        background, queries = (), tuple(classes)
    segmenter = SegmenterConfig(background_words=background, **settings)
    return Protocol(preset, dataset, segmenter, queries, vocabulary, area_threshold, precision)
