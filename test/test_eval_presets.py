"""Protocol presets per (method, dataset) and how command-line overrides apply to them."""

from __future__ import annotations

import argparse
import re

import pytest

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.vocab import load_vocabulary
from zeroseg_ros.tools.evaluation.cli import model_config_from_eval_args, protocol_from_args, register
from zeroseg_ros.tools.evaluation.datasets import DATASETS
from zeroseg_ros.tools.evaluation.presets import PRESETS, REFERENCES, Protocol, resolve_protocol
from zeroseg_ros.tools.evaluation.report import _protocol_line, published, published_for


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_preset_covers_every_dataset_with_all_classes(preset: str, dataset: str) -> None:
    protocol = resolve_protocol(preset, dataset)
    spec = DATASETS[dataset]
    assert protocol.segmenter.method == preset
    assert protocol.segmenter.templates == "imagenet80"
    # background words stand for class 0, the queries for classes 1.. (or 0.. without a background class)
    assert len(protocol.queries) == spec.num_classes - (1 if spec.has_background else 0)
    assert bool(protocol.segmenter.background_words) == spec.has_background
    if not spec.has_background:
        assert protocol.segmenter.probability_threshold == 0.0


def _window(protocol: Protocol) -> tuple[int, int, int]:
    return protocol.segmenter.short_side, protocol.segmenter.slide_crop, protocol.segmenter.slide_stride


def test_sclip_settings_from_its_configs() -> None:
    voc21 = resolve_protocol("sclip", "voc21")
    assert _window(voc21) == (336, 224, 112)
    assert voc21.segmenter.logit_scale == 65.0
    assert voc21.segmenter.probability_threshold == 0.1
    assert voc21.area_threshold == 0.1
    assert voc21.precision == "fp16"
    assert voc21.segmenter.background_words == tuple(load_vocabulary("voc21")[0].split("|"))
    assert voc21.queries == tuple(load_vocabulary("voc21")[1:])
    assert resolve_protocol("sclip", "context60").segmenter.logit_scale == 50.0
    assert resolve_protocol("sclip", "coco-stuff").segmenter.short_side == 448
    assert resolve_protocol("sclip", "cityscapes").segmenter.short_side == 560
    assert not resolve_protocol("sclip", "ade20k").segmenter.pamr


# sinahmr/NACLIP@0cac3a6 (v2): configs/cfg_<dataset>.py over naclip.py's defaults (224 / 112, logit scale 40, PAMR)
NACLIP_V2 = {
    # dataset: (short side, slide_crop, slide_stride, probability threshold)
    "voc21": (336, 0, 112, 0.1),
    "voc20": (336, 0, 112, 0.0),
    "context60": (336, 224, 112, 0.1),
    "context59": (336, 224, 112, 0.0),
    "coco-object": (336, 224, 112, 0.1),
    "coco-stuff": (336, 224, 112, 0.0),
    "cityscapes": (560, 224, 112, 0.0),
    "ade20k": (336, 224, 112, 0.0),
}


@pytest.mark.parametrize(("dataset", "expected"), NACLIP_V2.items())
def test_naclip_settings_are_those_of_its_v2_commit(dataset: str, expected: tuple[int, int, int, float]) -> None:
    protocol = resolve_protocol("naclip", dataset)
    assert (*_window(protocol), protocol.segmenter.probability_threshold) == expected
    assert protocol.segmenter.pamr
    # naclip.py predict: logits upsampled to ori_shape, PAMR there guided by the input upsampled to it
    assert protocol.segmenter.pamr_resolution == "frame"
    assert protocol.segmenter.logit_scale == 40.0
    assert protocol.area_threshold is None
    assert protocol.precision == "fp16"
    assert protocol.vocabulary == dataset  # NACLIP's class files are SCLIP's


# SuleBai/SC-CLIP@0417ba9: configs/cfg_<dataset>.py over scclip_segmentor.py's defaults (224 / 112, logit scale 40)
SCCLIP = {
    # dataset: (short side, logit scale, probability threshold, area threshold)
    "voc21": (336, 50.0, 0.15, 0.1),
    "context60": (336, 40.0, 0.15, None),
    "coco-object": (336, 55.0, 0.35, None),
    "voc20": (336, 40.0, 0.0, None),
    "context59": (336, 40.0, 0.0, None),
    "coco-stuff": (336, 40.0, 0.0, None),
    "cityscapes": (560, 40.0, 0.0, None),
    "ade20k": (336, 40.0, 0.0, None),
}


@pytest.mark.parametrize(("dataset", "expected"), SCCLIP.items())
def test_scclip_settings_are_those_of_its_configs(dataset: str, expected: tuple) -> None:
    protocol = resolve_protocol("scclip", dataset)
    short_side, logit_scale, threshold, area = expected
    assert _window(protocol) == (short_side, 224, 112)
    assert (protocol.segmenter.logit_scale, protocol.segmenter.probability_threshold) == (logit_scale, threshold)
    assert protocol.area_threshold == area
    assert not protocol.segmenter.pamr
    assert protocol.precision == "fp16"
    assert protocol.vocabulary == dataset  # SC-CLIP's class files are SCLIP's


def test_scclip_is_shown_with_the_numbers_of_its_repository_figure() -> None:
    # SuleBai/SC-CLIP@0417ba9 figs/scclip.jpg, the README's radar chart
    commit = REFERENCES["scclip"].commit
    shown = {dataset: [row["miou"] for row in published_for(dataset, commit)[0]] for dataset in DATASETS}
    assert shown == {
        "voc21": [64.6], "context60": [36.8], "coco-object": [37.7], "voc20": [84.3],
        "context59": [40.1], "coco-stuff": [26.6], "cityscapes": [41.0], "ade20k": [20.1],
    }  # fmt: skip


def test_clearclip_settings_from_its_configs() -> None:
    voc21 = resolve_protocol("clearclip", "voc21")
    assert _window(voc21) == (448, 448, 224)
    assert voc21.segmenter.logit_scale == 50.0
    assert voc21.segmenter.probability_threshold == 0.5
    assert voc21.precision == "fp16"
    assert resolve_protocol("clearclip", "context60").segmenter.probability_threshold == 0.15
    assert resolve_protocol("clearclip", "coco-object").segmenter.probability_threshold == 0.4
    assert _window(resolve_protocol("clearclip", "cityscapes")) == (448, 224, 224)
    assert not any(resolve_protocol("clearclip", dataset).segmenter.pamr for dataset in DATASETS)


def test_clearclip_presets_use_clearclips_own_class_names() -> None:
    # mc-lan/ClearCLIP@ad68a40 configs/cls_voc21.txt, cls_voc20.txt, cls_coco_object.txt: one name per class
    voc21 = resolve_protocol("clearclip", "voc21")
    voc20 = resolve_protocol("clearclip", "voc20")
    coco = resolve_protocol("clearclip", "coco-object")
    assert (voc21.vocabulary, voc20.vocabulary, coco.vocabulary) == (
        "voc21-clearclip",
        "voc20-clearclip",
        "coco-object-clearclip",
    )
    for protocol in (voc21, voc20, coco):
        assert not any("|" in query for query in protocol.queries)
    assert voc21.segmenter.background_words == ("background",)
    assert coco.segmenter.background_words == ("background",)
    assert voc21.queries == voc20.queries
    assert (voc20.queries[14], voc20.queries[19]) == ("person", "tvmonitor")
    assert coco.queries[:3] == ("person", "bicycle", "car")
    # every other COCO-Object line is SCLIP's
    assert coco.queries[1:] == resolve_protocol("sclip", "coco-object").queries[1:]


def test_every_preset_names_a_full_reference_commit() -> None:
    assert set(REFERENCES) == set(PRESETS)
    for preset, reference in REFERENCES.items():
        assert re.fullmatch(r"[0-9a-f]{40}", reference.commit), preset
        protocol = resolve_protocol(preset, "voc21")
        assert protocol.reference == reference
        assert protocol.summary()["reference"] == {"repository": reference.repository, "commit": reference.commit}
    assert REFERENCES["naclip"].commit.startswith("0cac3a6")  # the v2 configs, with the v2 README numbers


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_numbers_beside_a_preset_come_from_its_commit(preset: str, dataset: str) -> None:
    commit = REFERENCES[preset].commit
    reference, others = published_for(dataset, commit)
    entries = [e for e in published()["results"] if e["commit"] == commit and dataset in e["miou"]]
    assert [row["miou"] for row in reference] == [entry["miou"][dataset] for entry in entries]
    assert all(row["commit"] == commit for row in reference)
    assert all(row["commit"] != commit for row in others)


def test_naclip_is_shown_with_the_v2_readme_numbers() -> None:
    # sinahmr/NACLIP README.md: 62.36 / 80.60 / 25.18 before v2, 64.07 / 83.03 / 25.69 at 1e38f33 and 0cac3a6
    commit = REFERENCES["naclip"].commit
    shown = {dataset: [row["miou"] for row in published_for(dataset, commit)[0]] for dataset in DATASETS}
    assert (shown["voc21"], shown["voc20"], shown["coco-stuff"]) == ([64.07], [83.03], [25.69])


@pytest.mark.parametrize("preset", ["sclip", "clearclip", "maskclip"])
def test_other_presets_keep_pamr_at_the_model_input_resolution(preset: str) -> None:
    # their references run no PAMR; turned on with --pamr it keeps the segmenter's default
    assert resolve_protocol(preset, "voc21", {"pamr": True}).segmenter.pamr_resolution == "input"


def test_the_report_says_at_which_resolution_pamr_ran() -> None:
    naclip = resolve_protocol("naclip", "context60")
    assert "PAMR on at the frame's resolution" in _protocol_line(naclip.summary())
    at_input = resolve_protocol("naclip", "context60", {"pamr_resolution": "input"})
    assert "PAMR on at the model input's resolution" in _protocol_line(at_input.summary())
    assert at_input.changed_from_preset() == ["pamr_resolution"]
    assert "PAMR off" in _protocol_line(resolve_protocol("naclip", "context60", {"pamr": False}).summary())
    assert "PAMR off" in _protocol_line(resolve_protocol("sclip", "context60").summary())


def test_changed_settings_are_named() -> None:
    assert resolve_protocol("naclip", "voc21").changed_from_preset() == []
    changed = resolve_protocol("naclip", "voc21", {"slide_crop": 224, "pamr": False, "vocabulary": "voc21-clearclip"})
    assert changed.changed_from_preset() == ["background_words", "pamr", "slide_crop", "vocabulary"]
    assert changed.summary()["changed_from_preset"] == changed.changed_from_preset()


def test_overrides_win_and_none_means_keep() -> None:
    protocol = resolve_protocol(
        "sclip",
        "voc21",
        {"method": "naclip", "short_side": 448, "slide_crop": 0, "pamr": True, "logit_scale": None},
    )
    assert protocol.preset == "sclip"
    assert protocol.segmenter.method == "naclip"
    assert protocol.segmenter.short_side == 448
    assert protocol.segmenter.slide_crop == 0
    assert protocol.segmenter.pamr
    assert protocol.segmenter.logit_scale == 65.0  # None kept the preset's value


def test_vocabulary_override_must_fit_the_dataset() -> None:
    assert resolve_protocol("sclip", "voc21", {"vocabulary": "voc21-clearclip"}).segmenter.background_words == (
        "background",
    )
    with pytest.raises(ConfigError, match="does not fit dataset 'voc21'"):
        resolve_protocol("sclip", "voc21", {"vocabulary": "voc20"})


@pytest.mark.parametrize(
    ("preset", "dataset", "overrides", "message"),
    [
        ("mystery", "voc21", {}, "unknown preset"),
        ("sclip", "kitti", {}, "unknown dataset"),
        ("sclip", "voc21", {"neighbourhood_std": 3.0}, "cannot override"),
        ("sclip", "voc21", {"method": "dino"}, "method must be one of"),
        ("sclip", "voc21", {"probability_threshold": 2.0}, "probability_threshold"),
        ("sclip", "voc21", {"area_threshold": 1.5}, "area_threshold"),
    ],
)
def test_bad_presets_and_overrides(preset: str, dataset: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_protocol(preset, dataset, overrides)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["eval", "--root", "r", "--out", "o", *argv])


def test_cli_preset_defaults_to_the_method_then_the_default_method() -> None:
    assert protocol_from_args(_parse("--dataset", "voc21")).preset == "scclip"
    assert protocol_from_args(_parse("--dataset", "voc21", "--method", "clearclip")).preset == "clearclip"
    vanilla = protocol_from_args(_parse("--dataset", "voc21", "--method", "vanilla"))
    assert (vanilla.preset, vanilla.segmenter.method) == ("sclip", "vanilla")


def test_cli_overrides_reach_the_protocol() -> None:
    args = _parse(
        "--dataset", "ade20k", "--preset", "naclip", "--no-pamr", "--short-side", "448", "--slide-crop", "0",
        "--logit-scale", "55", "--threshold", "0.2", "--templates", "short",
    )  # fmt: skip
    settings = protocol_from_args(args).segmenter
    assert not settings.pamr
    assert (settings.short_side, settings.slide_crop, settings.logit_scale) == (448, 0, 55.0)
    assert (settings.probability_threshold, settings.templates) == (0.2, "short")


def test_cli_pamr_resolution_reaches_the_protocol() -> None:
    assert protocol_from_args(_parse("--dataset", "voc21", "--preset", "naclip")).segmenter.pamr_resolution == "frame"
    args = _parse("--dataset", "voc21", "--preset", "naclip", "--pamr-resolution", "input")
    assert protocol_from_args(args).segmenter.pamr_resolution == "input"
    args = _parse("--dataset", "voc21", "--preset", "sclip", "--pamr", "--pamr-resolution", "frame")
    sclip = protocol_from_args(args)
    assert (sclip.segmenter.pamr, sclip.segmenter.pamr_resolution) == (True, "frame")
    with pytest.raises(SystemExit):
        _parse("--dataset", "voc21", "--pamr-resolution", "image")


def test_cli_keeps_fp32_on_cpu_for_an_fp16_preset() -> None:
    args = _parse("--dataset", "voc20", "--preset", "clearclip", "--device", "cpu", "--random-weights")
    config = model_config_from_eval_args(args, protocol_from_args(args))
    assert config.precision == "fp32"
    assert config.random_init
    assert config.device == "cpu"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_labels_on_the_exact_full_resolution_path(preset: str) -> None:
    assert resolve_protocol(preset, "voc21").segmenter.exact_labels
