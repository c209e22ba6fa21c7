"""The evaluation protocol of each reference method on each benchmark, as named presets.

A preset follows one commit of the method's own repository, named by its full hash in ``REFERENCES``: the
settings of its ``configs/cfg_<dataset>.py`` (short side, class-name file, probability and area thresholds,
window) over its segmentor's defaults (window, logit scale, PAMR), and the precision its model loader runs on
CUDA. The report compares a run only with the numbers published at that same commit (``published.json``).

* sclip      wangf3014/SCLIP@b56bd30: short side 336 (COCO-Stuff 448, Cityscapes 560), window 224 / stride
             112, logit scale 40 (VOC21 65, Context60 and COCO-Object 50), threshold 0.1 on the three datasets
             with a background class, area threshold 0.1 on VOC21, no PAMR.
* naclip     sinahmr/NACLIP@0cac3a6 ("v2"): as SCLIP but short side 336 on COCO-Stuff too, the whole image
             (no window) on VOC21 and VOC20, logit scale 40 everywhere, no area threshold, PAMR (10 steps,
             dilations 8 and 16) on, at the original image's resolution (``pamr_resolution`` ``frame``).
* clearclip  mc-lan/ClearCLIP@ad68a40: short side 448, window 448 / stride 224 (Cityscapes 224 / 224), logit
             scale 50, thresholds 0.5 / 0.15 / 0.4 on VOC21 / Context60 / COCO-Object, its own class names on
             VOC21, VOC20 and COCO-Object.
* scclip     SuleBai/SC-CLIP@0417ba9: as SCLIP (short side 336, Cityscapes 560, window 224 / stride 112,
             logit scale 40) but VOC21 logit scale 50, threshold 0.15 and area threshold 0.1, Context60 threshold
             0.15, COCO-Object logit scale 55 and threshold 0.35; no PAMR.
* maskclip   SCLIP's configs (the SCLIP paper re-ran MaskCLIP under its own protocol; SCLIP's repository
             holds no MaskCLIP code or numbers).

The four repositories run CLIP in fp16 on CUDA and prompt with the 80 ImageNet templates; so do the presets.
Settings given on the command line win over the preset. What we still do differently is listed per reference
in docs/evaluation.md.
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
class Reference:
    """The commit of a reference repository whose configs a preset follows and whose numbers it is shown with."""

    repository: str  # GitHub owner/name
    commit: str  # the full 40-hex hash

    def summary(self) -> dict[str, str]:
        return {"repository": self.repository, "commit": self.commit}


SCLIP_REFERENCE = Reference("wangf3014/SCLIP", "b56bd3014b9e8a3ee3450bcfc53700a67d627b7a")
# "Update for v2" (defb7c9) changed the configs and code; 1e38f33 and 0cac3a6 only touched the README.
NACLIP_REFERENCE = Reference("sinahmr/NACLIP", "0cac3a651f753b11315ea799cfbfabf79da1bd76")
CLEARCLIP_REFERENCE = Reference("mc-lan/ClearCLIP", "ad68a404d55d48d27330b93554eb64a234ff717f")
# "update pytorch version of LOF algorithm": LOF in PyTorch instead of scikit-learn, the ViT-L settings removed.
SCCLIP_REFERENCE = Reference("SuleBai/SC-CLIP", "0417ba92851e9dd7432d608f10a0804d01a23062")
REFERENCES: dict[str, Reference] = {
    "sclip": SCLIP_REFERENCE,
    "naclip": NACLIP_REFERENCE,
    "scclip": SCCLIP_REFERENCE,
    "clearclip": CLEARCLIP_REFERENCE,
    "maskclip": SCLIP_REFERENCE,
}


@dataclass(frozen=True)
class Protocol:
    """How one method is evaluated on one dataset."""

    preset: str
    dataset: str
    segmenter: SegmenterConfig  # background_words already filled in from the vocabulary
    queries: tuple[str, ...]  # one per dataset class after the background class, '|' between synonyms
    vocabulary: str
    reference: Reference
    area_threshold: float | None = None  # SCLIP's: classes covering less of the foreground become background
    precision: str = "fp32"  # the precision the reference ran in (applied on CUDA only)

    def changed_from_preset(self) -> list[str]:
        """The settings (overrides) in which this protocol differs from its preset's, sorted by name."""
        preset = resolve_protocol(self.preset, self.dataset)
        mine, theirs = dataclasses.asdict(self.segmenter), dataclasses.asdict(preset.segmenter)
        changed = [name for name in mine if mine[name] != theirs[name]]
        changed += [name for name in ("vocabulary", "area_threshold") if getattr(self, name) != getattr(preset, name)]
        return sorted(changed)

    def summary(self) -> dict[str, Any]:
        """The settings that decide the score, for reports and for checking a resumed run."""
        config = dataclasses.asdict(self.segmenter)
        config["background_words"] = list(config["background_words"])
        return {
            "preset": self.preset,
            "dataset": self.dataset,
            "reference": self.reference.summary(),
            "changed_from_preset": self.changed_from_preset(),
            "vocabulary": self.vocabulary,
            "area_threshold": self.area_threshold,
            "precision": self.precision,
            "segmenter": config,
        }


# Per-dataset settings of each preset (SegmenterConfig fields, vocabulary, area_threshold, precision) over its
# base: each value is the reference commit's config file or, where that is silent, its segmentor's default.
_SCLIP_BASE = {"short_side": 336, "slide_crop": 224, "slide_stride": 112, "logit_scale": 40.0, "precision": "fp16"}
_PRESET_BASE: dict[str, dict[str, Any]] = {
    "sclip": _SCLIP_BASE,
    # naclip.py's predict upsamples the logits to the original image and runs PAMR there.
    "naclip": {**_SCLIP_BASE, "pamr": True, "pamr_resolution": "frame"},
    # scclip_segmentor.py's defaults are SCLIP's (pamr_steps=0); its clip.load keeps OpenAI's fp16 on CUDA.
    "scclip": _SCLIP_BASE,
    "clearclip": {"short_side": 448, "slide_crop": 448, "slide_stride": 224, "logit_scale": 50.0, "precision": "fp16"},
    "maskclip": _SCLIP_BASE,
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
        "voc21": {"probability_threshold": 0.1, "slide_crop": 0},
        "context60": {"probability_threshold": 0.1},
        "coco-object": {"probability_threshold": 0.1},
        "voc20": {"slide_crop": 0},
        "context59": {},
        "coco-stuff": {},
        "cityscapes": {"short_side": 560},
        "ade20k": {},
    },
    "scclip": {
        "voc21": {"logit_scale": 50.0, "probability_threshold": 0.15, "area_threshold": 0.1},
        "context60": {"probability_threshold": 0.15},
        "coco-object": {"logit_scale": 55.0, "probability_threshold": 0.35},
        "voc20": {},
        "context59": {},
        "coco-stuff": {},
        "cityscapes": {"short_side": 560},
        "ade20k": {},
    },
    "clearclip": {
        "voc21": {"probability_threshold": 0.5, "vocabulary": "voc21-clearclip"},
        "context60": {"probability_threshold": 0.15},
        "coco-object": {"probability_threshold": 0.4, "vocabulary": "coco-object-clearclip"},
        "voc20": {"vocabulary": "voc20-clearclip"},
        "context59": {},
        "coco-stuff": {},
        "cityscapes": {"slide_crop": 224, "slide_stride": 224},
        "ade20k": {},
    },
}
PRESETS["maskclip"] = {dataset: dict(settings) for dataset, settings in PRESETS["sclip"].items()}

OVERRIDABLE = (
    "method",
    "short_side",
    "slide_crop",
    "slide_stride",
    "logit_scale",
    "probability_threshold",
    "pamr",
    "pamr_resolution",
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
        "pamr_resolution": "input",
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
    return Protocol(preset, dataset, segmenter, queries, vocabulary, REFERENCES[preset], area_threshold, precision)
