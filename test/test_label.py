"""``zeroseg label`` in this process: MCAP and sqlite3 bags in, one MCAP bag out per input with the node's outputs
in time order; frames that cannot be decoded, truncated bags, a foreign output folder, and an interrupted job
that is resumed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bag_helpers import (
    COMPRESSED_TOPIC,
    OTHER_TOPIC,
    RAW_TOPIC,
    by_topic,
    fast_settings,
    make_bag,
    make_frame,
    read_bag,
    save_random_checkpoint,
)

from zeroseg_ros.core.config import SegmenterConfig
from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.ros.image_codec import compressed_to_segmenter_input, image_to_array, image_to_segmenter_input
from zeroseg_ros.tools.cli import main
from zeroseg_ros.tools.label.job import label_locally, prepare
from zeroseg_ros.tools.label.labeller import Labeller
from zeroseg_ros.tools.label.manifest import MANIFEST
from zeroseg_ros.tools.label.outputs import OutputSettings

OUTPUTS = ("mask", "mask_color", "overlay/compressed", "segmentation", "objects")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("weights") / "vit_s16.pt")


@pytest.fixture(scope="module")
def labeller(checkpoint) -> Labeller:
    return Labeller(fast_settings(checkpoint))


def run(labeller: Labeller, bags: list[Path], out: Path, overwrite: bool = False):
    manifest, plans, summary = prepare(bags, out, labeller.settings, overwrite, frames_per_range=64)
    label_locally(plans, manifest, labeller.settings, summary, lambda count: None, labeller)
    return summary


@pytest.mark.timeout(600)
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_is_labelled_with_every_output_in_time_order(tmp_path, labeller, storage) -> None:
    source = make_bag(tmp_path / f"drive_{storage}", frames=5, storage=storage)
    summary = run(labeller, [source], tmp_path / "out")
    assert summary.finished == [f"drive_{storage}"] and not summary.failed and summary.frames.frames == 10

    messages, types = read_bag(tmp_path / "out" / f"drive_{storage}")
    assert [t for _, t, _ in messages] == sorted(t for _, t, _ in messages)
    topics = by_topic(messages)
    assert topics["/zeroseg/labels"][0].data == "cat, dog, tree"
    assert len(topics[OTHER_TOPIC]) == len(topics[RAW_TOPIC]) == len(topics[COMPRESSED_TOPIC]) == 5
    for namespace in ("/front", "/rear"):
        for name in OUTPUTS:
            assert len(topics[f"{namespace}/zeroseg/{name}"]) == 5, f"{namespace}/zeroseg/{name}"
    assert types["/front/zeroseg/segmentation"] == "zeroseg_ros/msg/Segmentation"
    assert "/front/zeroseg/confidence" not in types  # optional, off by default

    # Each output keeps its frame's header and is written at the frame's receive time.
    received = {topic: [t for name, t, _ in messages if name == topic] for topic in (RAW_TOPIC, COMPRESSED_TOPIC)}
    for index, (frame, mask) in enumerate(zip(topics[RAW_TOPIC], topics["/front/zeroseg/mask"], strict=True)):
        assert mask.header == frame.header
        assert [t for name, t, _ in messages if name == "/front/zeroseg/mask"][index] == received[RAW_TOPIC][index]
    # The masks are the segmenter's of the recorded frames.
    for index, mask in enumerate(topics["/front/zeroseg/mask"]):
        expected = labeller.segmenter.segment(make_frame(48, 64, seed=index), "rgb").label_map
        np.testing.assert_array_equal(image_to_array(mask), expected)
    segmentation = topics["/front/zeroseg/segmentation"][0]
    assert list(segmentation.labels) == ["cat", "dog", "tree"] and list(segmentation.label_ids) == [1, 2, 3]
    np.testing.assert_array_equal(image_to_array(segmentation.mask), image_to_array(topics["/front/zeroseg/mask"][0]))


@pytest.mark.timeout(600)
def test_temporal_smoothing_follows_each_camera_through_a_bag_and_restarts_with_the_next(tmp_path, checkpoint) -> None:
    segmenter_config = SegmenterConfig(templates="none", background_words=(), short_side=64, temporal_smoothing=0.8)
    settings = fast_settings(checkpoint, segmenter=segmenter_config, outputs=OutputSettings(confidence=True))
    bags = [make_bag(tmp_path / "first", frames=6), make_bag(tmp_path / "second", frames=6, storage="sqlite3")]
    manifest, plans, summary = prepare(bags, tmp_path / "out", settings, False, frames_per_range=2)
    assert [len(plan.ranges) for plan in plans] == [1, 1]  # each camera's average runs through the whole bag
    label_locally(plans, manifest, settings, summary, lambda count: None, Labeller(settings))
    assert summary.finished == ["first", "second"] and summary.frames.frames == 24

    unsmoothed = Segmenter(settings.model, segmenter_config.replace(temporal_smoothing=0.0))
    unsmoothed.set_queries(settings.queries)
    for bag in ("first", "second"):
        # What a node started for this recording publishes for its frames in this order: each camera a stream.
        reference = Segmenter(settings.model, segmenter_config)
        reference.set_queries(settings.queries)
        topics = by_topic(read_bag(tmp_path / "out" / bag)[0])
        for topic, decode in ((RAW_TOPIC, image_to_segmenter_input), (COMPRESSED_TOPIC, compressed_to_segmenter_input)):
            outputs = "/front/zeroseg" if topic == RAW_TOPIC else "/rear/zeroseg"
            frames = zip(topics[topic], topics[f"{outputs}/mask"], topics[f"{outputs}/confidence"], strict=True)
            for index, (frame, mask, confidence) in enumerate(frames):
                pixels, order = decode(frame)
                order = "bgr" if order == "bgr" else "rgb"
                expected = reference.segment_batch([pixels], order, streams=[topic])[0]
                np.testing.assert_array_equal(image_to_array(mask), expected.label_map)
                # Both cameras' frames share the labeller's passes: the same sums in another order.
                np.testing.assert_allclose(image_to_array(confidence), expected.confidence, atol=1e-5)
                alone = unsmoothed.segment(pixels, order).confidence
                # The first frame of a camera starts its average; every later one carries the past frames.
                assert np.allclose(alone, expected.confidence, atol=1e-5) == (index == 0), (bag, topic, index)


@pytest.mark.parametrize("weight", ["1", "-0.1"])
def test_a_smoothing_weight_outside_0_to_1_is_refused_before_any_work(tmp_path, capsys, weight) -> None:
    command = ["label", str(tmp_path / "none"), "-q", "cat", "--out", str(tmp_path / "out"), "--temporal-smoothing"]
    assert main([*command, weight]) == 2
    assert "--temporal-smoothing must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(300)
def test_frames_that_cannot_be_decoded_are_skipped_and_counted_per_topic(tmp_path, labeller) -> None:
    source = make_bag(tmp_path / "drive", frames=4, bad_frames=(1, 2), compressed=False)
    summary = run(labeller, [source], tmp_path / "out")
    assert summary.frames.frames == 2 and summary.frames.skipped == {RAW_TOPIC: 2}
    assert "data has" in summary.frames.reasons[RAW_TOPIC]
    assert any(f"skipped 2 frames of {RAW_TOPIC}" in line for line in summary.lines())
    topics = by_topic(read_bag(tmp_path / "out" / "drive")[0])
    assert len(topics[RAW_TOPIC]) == 4 and len(topics["/front/zeroseg/mask"]) == 2  # the input is still copied


@pytest.mark.timeout(300)
def test_an_interrupted_job_keeps_finished_bags_and_resumes(tmp_path, labeller, monkeypatch) -> None:
    first, second = make_bag(tmp_path / "first", frames=3), make_bag(tmp_path / "second", frames=3)
    out = tmp_path / "out"
    label = labeller.label
    calls = []

    def stopped_in_second_bag(bag, cameras, time_range, sink, on_frames):
        calls.append(bag.path.name)
        if bag.path.name == "second":
            sink_count = [0]

            def interrupting_sink(record):
                sink_count[0] += 1
                if sink_count[0] == 5:
                    raise KeyboardInterrupt
                sink(record)

            return label(bag, cameras, time_range, interrupting_sink, on_frames)
        return label(bag, cameras, time_range, sink, on_frames)

    monkeypatch.setattr(labeller, "label", stopped_in_second_bag)
    with pytest.raises(KeyboardInterrupt):
        run(labeller, [first, second], out)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["first", MANIFEST]  # the unfinished bag is gone
    finished_file = next((out / "first").glob("*.mcap"))
    written = finished_file.stat().st_mtime_ns

    summary = run(labeller, [first, second], out)
    assert summary.kept == ["first"] and summary.finished == ["second"]
    assert finished_file.stat().st_mtime_ns == written
    assert len(by_topic(read_bag(out / "second")[0])["/front/zeroseg/mask"]) == 3


@pytest.mark.timeout(300)
def test_an_output_folder_of_another_job_is_refused_unless_overwrite(tmp_path, labeller, checkpoint) -> None:
    source = make_bag(tmp_path / "drive", frames=1, compressed=False)
    out = tmp_path / "out"
    run(labeller, [source], out)
    other_queries = fast_settings(checkpoint, queries="pallet")
    with pytest.raises(ZerosegError, match="another labelling job"):
        prepare([source], out, other_queries, False, 64)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "some_bag").mkdir()
    with pytest.raises(ZerosegError, match="no labelling job"):
        prepare([source], tmp_path / "foreign", labeller.settings, False, 64)
    _, plans, _ = prepare([source], out, other_queries, True, 64)
    assert [plan.name for plan in plans] == ["drive"]


@pytest.mark.timeout(600)
def test_a_truncated_bag_fails_in_one_line_and_the_others_are_labelled(tmp_path, checkpoint) -> None:
    good = make_bag(tmp_path / "good", frames=2, compressed=False)
    mcap = make_bag(tmp_path / "cut_mcap", frames=6)
    sqlite = make_bag(tmp_path / "cut_sqlite", frames=6, storage="sqlite3")
    for bag in (mcap, sqlite):
        data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    command = [sys.executable, "-m", "zeroseg_ros.tools.cli", "label", str(mcap), str(good), str(sqlite)]
    command += ["-q", "cat, dog", "--out", str(tmp_path / "out"), "--model", "ViT-S-16"]
    command += ["--checkpoint", str(checkpoint), "--quick-gelu", "false", "--device", "cpu", "--precision", "fp32"]
    command += ["--templates", "none", "--background", "", "--short-side", "64"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=500)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and str(mcap) in errors[0] and str(sqlite) in errors[1], result.stderr
    assert f"FAILED {mcap}" in result.stderr and f"FAILED {sqlite}" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good", MANIFEST]
    assert len(by_topic(read_bag(tmp_path / "out" / "good")[0])["/front/zeroseg/mask"]) == 2
