"""The generated zeroseg_ros/Segmentation message imports (colcon build of msg/Segmentation.msg) and goes
through a FastDDS publisher and subscriber unchanged."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.mark.timeout(60)
def test_segmentation_message_round_trips_through_dds() -> None:
    from ros_helpers import LATCHED, probe
    from sensor_msgs.msg import Image
    from zeroseg_ros.msg import Segmentation

    from zeroseg_ros.ros.image_codec import array_to_image, image_to_array

    label_map = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    sent = Segmentation()
    sent.header.frame_id = "camera"
    sent.header.stamp.sec, sent.header.stamp.nanosec = 5, 6
    sent.labels = ["person", "traffic cone", "Straße"]
    sent.label_ids = [1, 2, 3]
    sent.scores = [0.25, 0.5, 0.0]
    sent.areas = [3, 9, 0]
    sent.mask = array_to_image(label_map, "mono16", Image, sent.header)

    with probe() as test_probe:
        received: list[Segmentation] = []
        test_probe.node.create_subscription(Segmentation, "/msg_round_trip", received.append, LATCHED)
        publisher = test_probe.node.create_publisher(Segmentation, "/msg_round_trip", LATCHED)
        publisher.publish(sent)
        test_probe.spin_until(lambda: received, 20.0, "the Segmentation message")

    (got,) = received
    assert got == sent
    assert list(got.labels) == ["person", "traffic cone", "Straße"]
    assert got.mask.encoding == "mono16"
    np.testing.assert_array_equal(image_to_array(got.mask), label_map)
