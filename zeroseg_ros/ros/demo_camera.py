"""A demo camera: streams generated frames as sensor_msgs/Image, as a camera driver would.

Each frame is a sky gradient over a textured lawn with three shapes moving across it (a red ball, a blue box,
a yellow triangle), so the demo's queries have something to find on a machine with no camera. Frames are
deterministic in their index: the same run gives the same images.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import cv2
import numpy as np

DEMO_QUERIES = "sky, grass, red ball, blue box, yellow triangle"


def demo_frame(index: int, height: int = 480, width: int = 640) -> np.ndarray:
    """Frame ``index`` of the demo sequence, RGB uint8 ``height x width x 3``."""
    rng = np.random.default_rng(1234)  # the same texture every frame; only the shapes move
    horizon = height * 2 // 5
    frame = np.empty((height, width, 3), dtype=np.uint8)
    fade = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None, None]
    frame[:horizon] = ((1 - fade) * np.array([70, 130, 220]) + fade * np.array([170, 210, 245])).astype(np.uint8)
    grass = np.array([60, 140, 50], dtype=np.int16) + rng.integers(-35, 35, (height - horizon, width, 1))
    frame[horizon:] = np.clip(grass, 0, 255).astype(np.uint8)

    scale = min(height, width) / 480.0
    phase = index * 0.08
    ball_x = int((0.5 + 0.35 * math.sin(phase)) * width)
    ball_y = int(horizon + (height - horizon) * (0.45 + 0.2 * abs(math.sin(phase * 2))))
    cv2.circle(frame, (ball_x, ball_y), int(45 * scale), (210, 30, 30), thickness=-1, lineType=cv2.LINE_AA)
    box_x = int((0.25 + 0.15 * math.cos(phase * 0.7)) * width)
    box_size = int(90 * scale)
    box_top = height - int(40 * scale) - box_size
    cv2.rectangle(frame, (box_x, box_top), (box_x + box_size, box_top + box_size), (30, 60, 200), thickness=-1)
    apex_x = int((0.75 + 0.1 * math.sin(phase * 1.3)) * width)
    triangle = np.array(
        [
            (apex_x, horizon + int(20 * scale)),
            (apex_x - int(60 * scale), horizon + int(130 * scale)),
            (apex_x + int(60 * scale), horizon + int(130 * scale)),
        ],
        dtype=np.int32,
    )
    cv2.fillPoly(frame, [triangle], (235, 210, 40), lineType=cv2.LINE_AA)
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    """``zeroseg_demo_camera``: publishes ``image`` at ``rate`` Hz until shut down (or ``count`` frames)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from zeroseg_ros.ros.image_codec import array_to_image

    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node = rclpy.create_node("zeroseg_demo_camera")
    rate = node.declare_parameter("rate", 10.0).value
    width = node.declare_parameter("width", 640).value
    height = node.declare_parameter("height", 480).value
    frame_id = node.declare_parameter("frame_id", "demo_camera_optical").value
    encoding = node.declare_parameter("encoding", "rgb8").value
    count = node.declare_parameter("count", 0).value
    if encoding not in ("rgb8", "bgr8") or rate <= 0 or width < 32 or height < 32:
        print(
            f"[zeroseg_demo_camera] encoding must be rgb8 or bgr8, rate > 0, width and height >= 32; got "
            f"{encoding}, {rate}, {width}x{height}",
            file=sys.stderr,
        )
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    # Reliable depth 1: matches both best-effort (sensor-data) and reliable subscribers, and never queues.
    publisher = node.create_publisher(
        Image, "image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    published = 0

    def publish() -> None:
        nonlocal published
        if count and published >= count:
            raise SystemExit(0)
        pixels = demo_frame(published, height, width)
        if encoding == "bgr8":
            pixels = np.ascontiguousarray(pixels[:, :, ::-1])
        msg = array_to_image(pixels, encoding, Image)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = frame_id
        publisher.publish(msg)
        published += 1

    node.create_timer(1.0 / rate, publish)
    node.get_logger().info(f"publishing {width}x{height} {encoding} frames on {publisher.topic_name} at {rate} Hz")
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
