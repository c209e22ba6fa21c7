"""The labelling job's outputs equal the live node's: the same frames go to a running node (over ROS) and into a
bag labelled by ``zeroseg label``'s pipeline, with the same weights and settings; mask, mask_color,
overlay/compressed, segmentation and objects must match field for field, and with depth and camera_info the
points and the objects' 3-D statistics too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers import (
    STORE,
    by_topic,
    camera_info,
    depth_millimetres,
    fast_settings,
    make_frame,
    raw_image,
    read_bag,
    save_random_checkpoint,
)
from ros_helpers import FAST_NODE_PARAMETERS, RELIABLE, DepthProbe, node_process, probe, stamp_ns
from rosbags.rosbag2 import StoragePlugin, Writer

from zeroseg_ros.tools.label.job import label_locally, prepare
from zeroseg_ros.tools.label.labeller import Labeller

pytestmark = pytest.mark.ros

IMAGE, CAMERA_INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"

FRAMES = 3
STAMPS = [2_000_000_000 + index * 50_000_000 for index in range(FRAMES)]


def image_fields(msg) -> tuple:
    return (msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data))


def object_fields(msg) -> list[tuple]:
    fields = []
    for o in msg.objects:
        box = (o.box.x_offset, o.box.y_offset, o.box.width, o.box.height)
        in_3d = [round(float(v), 5) for v in (o.centroid.x, o.centroid.y, o.centroid.z, o.extents.x, o.extents.y)]
        in_3d += [round(float(o.extents.z), 5), round(float(o.valid_depth_fraction), 5)]
        fields.append(
            (o.id, o.label_id, o.label, box, o.pixel_count, round(float(o.mean_confidence), 5), o.has_depth, in_3d)
        )
    return fields


def node_parameters(checkpoint: Path, queries: str, **changes) -> dict:
    return {
        **FAST_NODE_PARAMETERS,
        "random_weights": False,
        "checkpoint": str(checkpoint),
        "quick_gelu": "false",
        "queries": queries,
        "publish_overlay_compressed": True,
        "warmup_sizes": "",
        **changes,
    }


def label_bag(tmp_path: Path, bag: Path, settings) -> dict:
    manifest, plans, summary = prepare([bag], tmp_path / "out", settings, False, 64)
    label_locally(plans, manifest, settings, summary, lambda count: None, Labeller(settings))
    return by_topic(read_bag(tmp_path / "out" / bag.name)[0])


@pytest.mark.timeout(600)
def test_label_outputs_equal_the_live_nodes_for_the_same_frames(tmp_path: Path) -> None:
    from sensor_msgs.msg import CompressedImage
    from zeroseg_ros.msg import SegmentedObjects

    checkpoint = save_random_checkpoint(tmp_path / "vit_s16.pt")
    settings = fast_settings(checkpoint)
    parameters = node_parameters(checkpoint, settings.queries)
    frames = [make_frame(48, 64, seed=10 + index) for index in range(FRAMES)]
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        for topic, msg_type in (("overlay/compressed", CompressedImage), ("objects", SegmentedObjects)):
            test_probe.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: test_probe.received[topic].append(msg), RELIABLE
            )
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: test_probe.node.count_publishers("objects") > 0, 10.0, "objects publisher")
        test_probe.spin_until(lambda: test_probe.received["labels"], 120.0, "the labels in use")
        for index, (pixels, stamp) in enumerate(zip(frames, STAMPS, strict=True)):
            test_probe.publish_frame(pixels, "rgb8", stamp_ns=stamp, frame_id="front")
            for topic in ("mask", "mask_color", "overlay/compressed", "segmentation", "objects"):
                test_probe.spin_until(
                    lambda topic=topic, index=index: len(test_probe.received[topic]) > index, 120.0, f"{topic} {index}"
                )
        live = {topic: list(test_probe.received[topic]) for topic in test_probe.received}

    bag = tmp_path / "drive"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
        for pixels, stamp in zip(frames, STAMPS, strict=True):
            message = STORE.serialize_cdr(raw_image(pixels, stamp), "sensor_msgs/msg/Image")
            writer.write(connection, stamp + 3_000_000, message)
    labelled = label_bag(tmp_path, bag, settings)

    for index in range(FRAMES):
        for name in ("mask", "mask_color"):
            ours, theirs = labelled[f"/front/zeroseg/{name}"][index], live[name][index]
            assert (stamp_ns(ours.header), ours.header.frame_id) == (stamp_ns(theirs.header), theirs.header.frame_id)
            assert image_fields(ours) == image_fields(theirs), name
        ours, theirs = labelled["/front/zeroseg/overlay/compressed"][index], live["overlay/compressed"][index]
        assert ours.format == theirs.format and bytes(ours.data) == bytes(theirs.data)
        ours, theirs = labelled["/front/zeroseg/segmentation"][index], live["segmentation"][index]
        assert list(ours.labels) == list(theirs.labels) and list(ours.label_ids) == list(theirs.label_ids)
        assert list(ours.areas) == list(theirs.areas)
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-6)
        assert image_fields(ours.mask) == image_fields(theirs.mask)
        ours, theirs = labelled["/front/zeroseg/objects"][index], live["objects"][index]
        assert object_fields(ours) == object_fields(theirs) and ours.has_depth == theirs.has_depth
    assert labelled["/zeroseg/labels"][0].data == live["labels"][-1].data


@pytest.mark.timeout(600)
def test_label_points_and_3d_objects_equal_the_live_nodes(tmp_path: Path) -> None:
    from sensor_msgs.msg import CompressedImage

    height, width = 48, 64
    checkpoint = save_random_checkpoint(tmp_path / "vit_s16.pt")
    settings = fast_settings(checkpoint)
    info = camera_info(0, height, width)
    parameters = node_parameters(checkpoint, settings.queries, use_depth=True)
    sent = []  # (stamp, frame, depth) of every frame sent
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.node.create_subscription(
            CompressedImage, "overlay/compressed", lambda msg: test_probe.received["overlay"].append(msg), RELIABLE
        )
        test_probe.wait_for_node(node)
        camera = DepthProbe(test_probe, width, height, [float(v) for v in info.k])
        camera.wait_for_node()
        test_probe.spin_until(lambda: test_probe.received["labels"], 120.0, "the labels in use")
        # The node pairs a frame with the depth received before it: frames are sent until one was answered with
        # depth (the depth's delivery is not awaited: nothing of the node shows it before the frame's answer).
        for index in range(5):
            stamp = 3_000_000_000 + index * 100_000_000
            pixels, depth = make_frame(height, width, seed=20 + index), depth_millimetres(height, width, index)
            sent.append((stamp, pixels, depth))
            camera.publish_camera_info(stamp)
            camera.publish_depth(depth, "16UC1", stamp)
            test_probe.spin_for(0.3)
            test_probe.publish_frame(pixels, "rgb8", stamp_ns=stamp, frame_id="front")
            test_probe.spin_until(
                lambda stamp=stamp: any(stamp_ns(m.header) == stamp for m in test_probe.received["objects"]),
                120.0,
                f"the objects of frame {index}",
            )
            if test_probe.received["objects"][-1].has_depth:
                break
        live_objects = test_probe.received["objects"][-1]
        assert live_objects.has_depth, "no frame of five was answered with its depth"
        stamp = stamp_ns(live_objects.header)
        test_probe.spin_until(
            lambda: any(stamp_ns(m.header) == stamp for m in test_probe.received["points"]), 60.0, "the points"
        )
        live_points = next(m for m in test_probe.received["points"] if stamp_ns(m.header) == stamp)

    bag = tmp_path / "depth_drive"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
        depths = writer.add_connection("/front/depth", "sensor_msgs/msg/Image", typestore=STORE)
        infos = writer.add_connection("/front/camera_info", "sensor_msgs/msg/CameraInfo", typestore=STORE)
        for stamp_sent, pixels, depth in sent:
            writer.write(
                infos, stamp_sent + 1, STORE.serialize_cdr(camera_info(stamp_sent, height, width), CAMERA_INFO)
            )
            depth_msg = STORE.serialize_cdr(raw_image(depth, stamp_sent, "16UC1"), IMAGE)
            writer.write(depths, stamp_sent + 2, depth_msg)
            writer.write(images, stamp_sent + 3, STORE.serialize_cdr(raw_image(pixels, stamp_sent), IMAGE))
    labelled = label_bag(tmp_path, bag, settings)

    index = [s for s, _, _ in sent].index(stamp)
    ours = labelled["/front/zeroseg/points"][index]
    assert stamp_ns(ours.header) == stamp and ours.header.frame_id == live_points.header.frame_id
    fields = [(f.name, f.offset, f.datatype, f.count) for f in ours.fields]
    assert fields == [(f.name, f.offset, f.datatype, f.count) for f in live_points.fields]
    assert (ours.width, ours.point_step, ours.row_step) == (
        live_points.width,
        live_points.point_step,
        live_points.row_step,
    )
    assert bytes(ours.data) == bytes(live_points.data) and ours.width > 0
    ours_objects = labelled["/front/zeroseg/objects"][index]
    assert ours_objects.has_depth and object_fields(ours_objects) == object_fields(live_objects)
