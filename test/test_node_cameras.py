"""One node, three cameras (the cameras parameter), as real processes: each camera's outputs carry its own frames'
headers and nothing of another camera; each camera has its own /diagnostics status; a camera whose frames are
refused or that stops leaves the others running; under overload every camera gets its turn; a bad camera name
stops the node at start."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_helpers import (
    FAST_NODE_PARAMETERS,
    RELIABLE,
    NodeProcess,
    Probe,
    make_frame,
    node_process,
    probe,
    stamp_ns,
)
from sensor_msgs.msg import Image

from zeroseg_ros.ros.image_codec import array_to_image

pytestmark = pytest.mark.ros

NODE = "/zeroseg"


class Cameras:
    """Several cameras beside a probe: a reliable image publisher and a mask recorder per camera, and each
    camera's latest /diagnostics status."""

    def __init__(self, test_probe: Probe, names: list[str]) -> None:
        self.probe = test_probe
        self.names = names
        self.masks: dict[str, list[Any]] = defaultdict(list)
        self.publishers = {}
        for name in names:
            self.publishers[name] = test_probe.node.create_publisher(Image, f"{name}/image", RELIABLE)
            test_probe.node.create_subscription(
                Image, f"{name}/mask", lambda msg, name=name: self.masks[name].append(msg), RELIABLE
            )

    def status(self, name: str) -> tuple[int, str, dict[str, str]]:
        """(level, message, values) of camera ``name``'s latest status ((-1, "", {}) before the first)."""
        for array in reversed(self.probe.received["diagnostics"]):
            for status in array.status:
                if status.name == f"{NODE}: camera {name}":
                    values = {value.key: value.value for value in status.values}
                    return int.from_bytes(status.level, "little"), status.message, values
        return -1, "", {}

    def wait_until_ready(self, node: NodeProcess) -> None:
        """The queries in use and every camera's subscription matched on both sides."""

        def ready() -> bool:
            assert node.alive(), node.log()
            if not self.probe.diagnostics().get("queries") or self.probe.diagnostics().get("pending_queries"):
                return False
            return all(
                self.publishers[name].get_subscription_count() > 0
                and int(self.status(name)[2].get("camera_publishers", "0")) > 0
                for name in self.names
            )

        self.probe.spin_until(ready, 120.0, "the queries in use and every camera matched")
        self.probe.spin_for(0.2)

    def publish(self, name: str, pixels: np.ndarray, stamp: int, encoding: str = "rgb8") -> None:
        msg = array_to_image(pixels, encoding, Image)
        msg.header.frame_id = f"{name}_optical_frame"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.publishers[name].publish(msg)


@contextmanager
def three_cameras(tmp_path: Path, names: list[str], **parameters: Any) -> Iterator[tuple[NodeProcess, Cameras]]:
    parameters = {**FAST_NODE_PARAMETERS, "queries": "grass, sky", "reliable": True, **parameters}
    with node_process(tmp_path, {**parameters, "cameras": ", ".join(names)}) as node, probe() as test_probe:
        cameras = Cameras(test_probe, names)
        cameras.wait_until_ready(node)
        yield node, cameras


@pytest.mark.timeout(300)
def test_three_cameras_keep_their_own_headers_counts_and_health(tmp_path: Path) -> None:
    names = ["front", "left", "right"]
    sizes = {"front": (48, 64), "left": (60, 80), "right": (48, 64)}  # two sizes: two passes per round
    with three_cameras(tmp_path, names) as (node, cameras):
        # Each camera's frames carry its own frame_id and stamps (camera index in the nanoseconds).
        sent: dict[str, list[int]] = defaultdict(list)
        for round_index in range(1, 6):
            for camera_index, name in enumerate(names):
                stamp = round_index * 1_000_000_000 + camera_index
                cameras.publish(name, make_frame(*sizes[name], seed=camera_index), stamp)
                sent[name].append(stamp)
            cameras.probe.spin_until(
                lambda round_index=round_index: all(len(cameras.masks[n]) >= round_index for n in names),
                60.0,
                f"round {round_index}'s masks of every camera",
            )
        for name in names:
            masks = cameras.masks[name]
            assert {mask.header.frame_id for mask in masks} == {f"{name}_optical_frame"}
            assert [stamp_ns(mask.header) for mask in masks] == sent[name]
            assert {(mask.height, mask.width) for mask in masks} == {sizes[name]}
        # The node's own topics stay silent: every output is under its camera's name.
        assert not cameras.probe.received["mask"]

        # A frame the node refuses counts on its camera only, and the others go on.
        cameras.publish("left", np.zeros((48, 64), np.float32), 7_000_000_000, encoding="32FC1")  # depth, not colour
        for name in ("front", "right"):
            cameras.publish(name, make_frame(*sizes[name]), 7_000_000_000)
        expected = {  # received, published, rejected
            "front": ("6", "6", "0"),
            "left": ("6", "5", "1"),
            "right": ("6", "6", "0"),
        }

        def counted() -> bool:
            statuses = {name: cameras.status(name)[2] for name in names}
            return all(
                tuple(statuses[name].get(key) for key in ("frames_received", "frames_published", "frames_rejected"))
                == expected[name]
                for name in names
            )

        cameras.probe.spin_until(counted, 60.0, "each camera's status counting its own frames")
        assert all(stamp_ns(cameras.masks[name][-1].header) == 7_000_000_000 for name in ("front", "right"))
        assert len(cameras.masks["left"]) == 5
        for name in names:
            values = cameras.status(name)[2]
            assert values["camera"] == name
            assert ("32FC1" in values["last_rejection"]) == (name == "left")
        cameras.probe.spin_until(
            lambda: cameras.probe.diagnostics().get("frames_published") == "17", 10.0, "the node's status"
        )
        assert cameras.probe.diagnostics()["frames_received"] == "18"

        # Right stops: its status goes stale while front and left keep running.
        stamp = 8_000_000_000
        for _ in range(40):
            stamp += 1
            for name in ("front", "left"):
                cameras.publish(name, make_frame(*sizes[name]), stamp)
            cameras.probe.spin_for(0.1)
            if cameras.status("right")[1].startswith("no camera frame"):
                break
        level, message, _ = cameras.status("right")
        assert level >= 1 and message.startswith("no camera frame"), message  # WARN, then ERROR
        assert float(cameras.status("right")[2]["seconds_without_frames"]) >= 1.5
        for name in ("front", "left"):
            assert cameras.status(name)[0] == 0, cameras.status(name)
            cameras.probe.spin_until(
                lambda name=name: stamp_ns(cameras.masks[name][-1].header) > 8_000_000_000,
                30.0,
                f"{name}'s masks after right stopped",
            )
        assert node.alive()


@pytest.mark.timeout(300)
def test_under_overload_every_camera_gets_its_turn(tmp_path: Path) -> None:
    """A slow model (224-pixel input), two frames a pass, three cameras: "alpha" (first by name) sends three
    times as often as the others. Every camera must get at least 20 % of the masks, and each counts its own
    replaced frames."""
    names = ["zeta", "alpha", "mid"]
    with three_cameras(tmp_path, names, short_side=224, max_batch=2) as (_, cameras):
        frames = {name: make_frame(120, 160, seed=index) for index, name in enumerate(names)}
        stamp = 0
        while sum(len(cameras.masks[name]) for name in names) < 15:
            for tick in range(3):
                stamp += 1
                for name in names if tick == 0 else ["alpha"]:
                    cameras.publish(name, frames[name], stamp)
                cameras.probe.spin_for(0.02)
            assert stamp < 30_000, "the node published too few masks"
        total = sum(len(cameras.masks[name]) for name in names)
        shares = {name: len(cameras.masks[name]) / total for name in names}
        assert min(shares.values()) >= 0.2, shares
        cameras.probe.wait_for_fresh_diagnostics()  # counts made after the last frame
        dropped = {name: int(cameras.status(name)[2]["frames_dropped"]) for name in names}
        assert all(count > 0 for count in dropped.values()), dropped  # overloaded: every camera replaced frames
        assert dropped["alpha"] == max(dropped.values()), dropped


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("cameras", "message"),
    [
        ("front, , left", "camera names must not be empty"),
        ("front, 2nd", "camera name '2nd' is not a relative ROS name"),
    ],
)
def test_a_bad_camera_name_stops_the_node_at_start(tmp_path: Path, cameras: str, message: str) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "cameras": cameras}) as node:
        node.process.wait(timeout=100)
        log = node.log()
    assert node.process.returncode == 2, log
    assert f"cannot start: cameras: {message}" in log and "Traceback" not in log
