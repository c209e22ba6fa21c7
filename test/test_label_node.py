"""The labelling job's outputs equal the live node's: the same frames go to a running node (over ROS) and into a
bag labelled by ``zeroseg label``'s pipeline, with the same weights and settings; mask, mask_color,
overlay/compressed, segmentation and objects must match field for field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers import STORE, by_topic, fast_settings, make_frame, raw_image, read_bag, save_random_checkpoint
from ros_helpers import FAST_NODE_PARAMETERS, RELIABLE, node_process, probe, stamp_ns
from rosbags.rosbag2 import StoragePlugin, Writer

from zeroseg_ros.tools.label.job import label_locally, prepare
from zeroseg_ros.tools.label.labeller import Labeller

pytestmark = pytest.mark.ros

FRAMES = 3
STAMPS = [2_000_000_000 + index * 50_000_000 for index in range(FRAMES)]


def image_fields(msg) -> tuple:
    return (msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data))


def object_fields(msg) -> list[tuple]:
    fields = []
    for o in msg.objects:
        box = (o.box.x_offset, o.box.y_offset, o.box.width, o.box.height)
        fields.append((o.id, o.label_id, o.label, box, o.pixel_count, round(float(o.mean_confidence), 5), o.has_depth))
    return fields


@pytest.mark.timeout(600)
def test_label_outputs_equal_the_live_nodes_for_the_same_frames(tmp_path: Path) -> None:
    from sensor_msgs.msg import CompressedImage
    from zeroseg_ros.msg import SegmentedObjects

    checkpoint = save_random_checkpoint(tmp_path / "vit_s16.pt")
    settings = fast_settings(checkpoint)
    parameters = {
        **FAST_NODE_PARAMETERS,
        "random_weights": False,
        "checkpoint": str(checkpoint),
        "quick_gelu": "false",
        "queries": settings.queries,
        "publish_overlay_compressed": True,
        "warmup_sizes": "",
    }
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
    manifest, plans, summary = prepare([bag], tmp_path / "out", settings, False, 64)
    label_locally(plans, manifest, settings, summary, lambda count: None, Labeller(settings))
    labelled = by_topic(read_bag(tmp_path / "out" / "drive")[0])

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
