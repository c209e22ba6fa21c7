"""``zeroseg label`` with depth: a camera's registered depth images and camera_info in the bag give ``points`` and
3-D ``objects``; depth is found beside the camera or given; depth recorded late or across a range's end is still
paired; frames without usable depth are labelled, counted and explained."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bag_helpers import (
    CAMERA_INFO_TOPIC,
    DEPTH_TOPIC,
    FIRST_STAMP_NS,
    FOCAL,
    FRAME_PERIOD_NS,
    RAW_TOPIC,
    by_topic,
    depth_millimetres,
    fast_settings,
    make_bag,
    make_depth_bag,
    read_bag,
    save_random_checkpoint,
)

from zeroseg_ros.ros.image_codec import image_to_array
from zeroseg_ros.tools.cli import main
from zeroseg_ros.tools.label.bags import BagError, InputBag, TimeRange
from zeroseg_ros.tools.label.job import label_locally, plan_bag, prepare
from zeroseg_ros.tools.label.labeller import Labeller
from zeroseg_ros.tools.label.outputs import OutputSettings

HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("weights") / "vit_s16.pt")


@pytest.fixture(scope="module")
def labeller(checkpoint) -> Labeller:
    return Labeller(fast_settings(checkpoint, outputs=OutputSettings(confidence=True, points_stride=1)))


def run(labeller: Labeller, source: Path, out: Path):
    manifest, plans, summary = prepare([source], out, labeller.settings, False, 64)
    label_locally(plans, manifest, labeller.settings, summary, lambda count: None, labeller)
    return summary


def read_points(cloud) -> np.ndarray:
    """A PointCloud2's records, read by its advertised fields (sensor_msgs: 7 FLOAT32, 4 UINT16)."""
    formats = {7: "<f4", 4: "<u2"}
    dtype = np.dtype(
        {
            "names": [f.name for f in cloud.fields],
            "formats": [formats[f.datatype] for f in cloud.fields],
            "offsets": [f.offset for f in cloud.fields],
            "itemsize": cloud.point_step,
        }
    )
    return np.frombuffer(bytes(cloud.data), dtype=dtype, count=cloud.width)


def expected_points(mask: np.ndarray, confidence: np.ndarray, millimetres: np.ndarray) -> dict[str, np.ndarray]:
    """Every labelled pixel with depth, row by row, back-projected through the pinhole of bag_helpers'
    camera_info (same resolution as the colour frame)."""
    rows, cols = np.nonzero((mask > 0) & (millimetres > 0))
    z = millimetres[rows, cols] / 1000.0
    cx, cy = (mask.shape[1] - 1) / 2, (mask.shape[0] - 1) / 2
    return {
        "x": (cols - cx) * z / FOCAL,
        "y": (rows - cy) * z / FOCAL,
        "z": z,
        "label": mask[rows, cols],
        "confidence": confidence[rows, cols],
    }


@pytest.mark.timeout(600)
def test_a_camera_with_depth_gets_points_and_3d_objects(tmp_path, checkpoint) -> None:
    source = make_depth_bag(tmp_path / "drive", frames=3)
    command = ["label", str(source), "-q", "cat, dog, tree", "--out", str(tmp_path / "out")]
    command += ["--model", "ViT-S-16", "--checkpoint", str(checkpoint), "--quick-gelu", "false", "--device", "cpu"]
    command += ["--precision", "fp32", "--templates", "none", "--background", "", "--short-side", "64"]
    command += ["--confidence", "--points-stride", "1", "--depth-topic", f"{RAW_TOPIC}={DEPTH_TOPIC}"]
    assert main(command) == 0

    messages, types = read_bag(tmp_path / "out" / "drive")
    topics = by_topic(messages)
    assert types["/front/zeroseg/points"] == "sensor_msgs/msg/PointCloud2"
    # The depth topic is no camera: one set of outputs per colour frame, and the input's topics copied.
    assert len(topics["/front/zeroseg/mask"]) == 3 and len(topics[DEPTH_TOPIC]) == 3
    assert len(topics[CAMERA_INFO_TOPIC]) == 3
    # Written at the frames' receive times.
    times = {topic: [t for name, t, _ in messages if name == topic] for topic in (RAW_TOPIC, "/front/zeroseg/points")}
    assert times["/front/zeroseg/points"] == times[RAW_TOPIC]
    for index in range(3):
        frame = topics[RAW_TOPIC][index]
        cloud = topics["/front/zeroseg/points"][index]
        assert cloud.header.stamp == frame.header.stamp and cloud.header.frame_id == frame.header.frame_id
        assert (cloud.height, cloud.is_bigendian, cloud.point_step) == (1, False, 20)
        mask = image_to_array(topics["/front/zeroseg/mask"][index])
        confidence = image_to_array(topics["/front/zeroseg/confidence"][index])
        expected = expected_points(mask, confidence, depth_millimetres(HEIGHT, WIDTH, index))
        points = read_points(cloud)
        assert len(points) == len(expected["z"]) > 0
        for name in ("x", "y", "z", "confidence"):
            np.testing.assert_allclose(points[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(points["label"], expected["label"])

        objects = topics["/front/zeroseg/objects"][index]
        assert objects.has_depth and objects.objects
        for found in objects.objects:
            assert found.has_depth
            # The wall is at 2 m + 10 mm a frame, the box 0.5 m nearer: every centroid lies between.
            assert 1.5 + 0.01 * index - 1e-4 <= found.centroid.z <= 2.0 + 0.01 * index + 1e-4
            assert 0.0 < found.valid_depth_fraction <= 1.0


@pytest.mark.timeout(600)
def test_depth_recorded_late_and_across_range_ends_is_paired_once(tmp_path, labeller) -> None:
    # Each depth image is received 2.5 frame periods after its frame: after the next frames, across range ends.
    source = make_depth_bag(tmp_path / "late", frames=6, depth_delay_ns=FRAME_PERIOD_NS * 5 // 2)
    summary = run(labeller, source, tmp_path / "out")
    assert summary.frames.frames == 6 and not summary.frames.without_depth
    whole = read_bag(tmp_path / "out" / "late")[0]
    assert len(by_topic(whole)["/front/zeroseg/points"]) == 6

    # The Ray job's split: ranges of two frames, each labelled alone, give the same records as the whole bag.
    plan = plan_bag(source, labeller.settings, frames_per_range=2)
    assert len(plan.ranges) == 3
    records = []
    with InputBag(source) as bag:
        for time_range in plan.ranges:
            labeller.label(bag, plan.cameras, time_range, records.append)
    with InputBag(tmp_path / "out" / "late") as written:
        stored = list(written.messages(TimeRange(0, None, None, 0)))
    assert [(r.topic, r.timestamp, r.data) for r in records] == stored


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("bag_options", "reason"),
    [
        ({"without_depth": (1,)}, "no depth image on /front/depth within 0.02 s"),
        ({"depth_encoding": "mono8"}, "encoding must be 16UC1 or 32FC1"),
        ({"depth_size": (HEIGHT, WIDTH // 2)}, "does not have the colour image's aspect ratio"),
    ],
)
def test_frames_without_usable_depth_are_labelled_counted_and_explained(
    tmp_path, labeller, bag_options, reason
) -> None:
    source = make_depth_bag(tmp_path / "drive", frames=3, **bag_options)
    summary = run(labeller, source, tmp_path / "out")
    missing = 1 if "without_depth" in bag_options else 3
    assert summary.frames.frames == 3 and summary.frames.without_depth[RAW_TOPIC] == missing
    assert reason in summary.frames.depth_reasons[RAW_TOPIC]
    assert any(f"{missing} frames of {RAW_TOPIC} have no points" in line for line in summary.lines())
    topics = by_topic(read_bag(tmp_path / "out" / "drive")[0])
    assert len(topics["/front/zeroseg/points"]) == 3 - missing
    assert [o.has_depth for o in topics["/front/zeroseg/objects"]].count(False) == missing


def test_half_resolution_depth_is_paired_through_scaled_intrinsics(tmp_path, labeller) -> None:
    source = make_depth_bag(tmp_path / "half", frames=1, depth_size=(HEIGHT // 2, WIDTH // 2))
    summary = run(labeller, source, tmp_path / "out")
    assert not summary.frames.without_depth
    topics = by_topic(read_bag(tmp_path / "out" / "half")[0])
    mask = image_to_array(topics["/front/zeroseg/mask"][0])
    points = read_points(topics["/front/zeroseg/points"][0])
    # Depth pixel (v, u) sits under colour pixel (2v+1, 2u+1)'s corner: its centre is colour (2v+0.5, 2u+0.5).
    depth = depth_millimetres(HEIGHT // 2, WIDTH // 2, 0)
    rows, cols = np.nonzero((mask[1::2, 1::2] > 0) & (depth > 0))
    z = depth[rows, cols] / 1000.0
    np.testing.assert_allclose(points["z"], z, rtol=1e-6)
    fx, cx = FOCAL / 2, ((WIDTH - 1) / 2 + 0.5) / 2 - 0.5
    np.testing.assert_allclose(points["x"], (cols - cx) * z / fx, rtol=1e-5, atol=1e-6)


def test_a_bag_with_depth_is_planned_in_one_read(tmp_path, checkpoint, monkeypatch) -> None:
    """The frames' receive times (for the ranges) and camera_info (for the calibrations) come from one pass over
    the bag: a recording's images are read once before labelling starts, not once per thing planned."""
    source = make_depth_bag(tmp_path / "drive", frames=5)
    reads = []
    messages = InputBag._messages

    def counted(bag, connections, start=None, stop=None):
        reads.append(sorted(c.topic for c in connections))
        return messages(bag, connections, start, stop)

    monkeypatch.setattr(InputBag, "_messages", counted)
    plan = plan_bag(source, fast_settings(checkpoint), 2)
    assert reads == [[CAMERA_INFO_TOPIC, RAW_TOPIC]]
    assert [r.frames for r in plan.ranges] == [2, 2, 1] and plan.cameras[0].depth is not None


def test_depth_is_found_beside_the_camera_or_given(tmp_path, checkpoint, caplog) -> None:
    settings = fast_settings(checkpoint)
    rect = make_depth_bag(tmp_path / "rect", frames=1, depth_topic="/front/depth/image_rect_raw")
    camera = plan_bag(rect, settings, 64).cameras
    assert [(c.image_topic, c.depth.depth_topic if c.depth else None) for c in camera] == [
        (RAW_TOPIC, "/front/depth/image_rect_raw")
    ]
    assert camera[0].depth.camera_info_topic == CAMERA_INFO_TOPIC
    assert camera[0].depth.calibrations[0].timestamp == FIRST_STAMP_NS + 1_000_000
    # The bare form names the only camera's depth; --no-depth (an empty mapping) leaves depth out.
    given = plan_bag(rect, replace(settings, depth_topics=(("", "/front/depth/image_rect_raw"),)), 64).cameras
    assert given == camera
    assert [c.depth for c in plan_bag(rect, replace(settings, depth_topics=()), 64).cameras] == [None]

    blind = make_depth_bag(tmp_path / "no_info", frames=1, with_camera_info=False)
    with caplog.at_level(logging.WARNING, logger="zeroseg"):
        assert [c.depth for c in plan_bag(blind, settings, 64).cameras] == [None]
    assert f"no camera_info on {CAMERA_INFO_TOPIC}" in caplog.text
    with pytest.raises(BagError, match="no camera_info"):
        plan_bag(blind, replace(settings, depth_topics=((RAW_TOPIC, DEPTH_TOPIC),)), 64)
    with pytest.raises(BagError, match="not a sensor_msgs/Image topic"):
        plan_bag(rect, replace(settings, depth_topics=((RAW_TOPIC, "/front/nothing"),)), 64)
    two_cameras = make_bag(tmp_path / "two", frames=1)
    with pytest.raises(BagError, match="IMAGE_TOPIC=DEPTH_TOPIC"):
        plan_bag(two_cameras, replace(settings, depth_topics=(("", "/chatter"),)), 64)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--depth-topic", "front/depth"], "absolute topic names"),
        (["--depth-topic", "/a=/d", "--depth-topic", "/a=/e"], "names a camera twice"),
        (["--no-depth", "--depth-topic", "/d"], "contradict"),
        (["--points-stride", "0"], "--points-stride"),
        (["--depth-tolerance", "2"], "--depth-tolerance"),
    ],
)
def test_bad_depth_options_are_refused_before_any_work(tmp_path, capsys, options, message) -> None:
    command = ["label", str(tmp_path / "none"), "-q", "cat", "--out", str(tmp_path / "out"), *options]
    assert main(command) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
