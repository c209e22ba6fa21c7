"""Helpers of the ROS tests: a per-run DDS domain on loopback, node processes in their own process group, and
a test-side rclpy node that publishes frames and collects what the zeroseg node publishes.

Real rclpy over FastDDS: nothing of ROS is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from zeroseg_ros.tools.process_group import stop_process_group

# One DDS domain per test run (parallel runs on one machine do not hear each other) and discovery on
# loopback only: these tests send no traffic off the machine.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) not installed: run scripts/setup.sh")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from zeroseg_ros.ros.image_codec import array_to_image  # noqa: E402

# The smallest useful network: a random-weight ViT-S-16 on 64-pixel inputs without prompt templates keeps a
# frame well under a second on two CPU cores. fp32, so that every machine runs the same numbers.
FAST_NODE_PARAMETERS: dict[str, Any] = {
    "random_weights": True,
    "model": "ViT-S-16",
    "device": "cpu",
    "precision": "fp32",
    "short_side": 64,
    "templates": "none",
    "diagnostics_period": 0.5,
    # Random weights mean nothing to the default background words and threshold: left out, every label can win.
    "background_words": "",
}

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


ROOT = Path(__file__).resolve().parents[1]
# The test-only interface packages (test/interfaces/: vision_msgs), built by scripts/setup.sh (and for Jazzy by
# scripts/test-jazzy.sh, which names its own tree in ZEROSEG_TEST_INSTALL).
TEST_INSTALL = Path(os.environ.get("ZEROSEG_TEST_INSTALL", ROOT / "install-test"))


def interfaces_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with install-test/ on the Python, library and ament paths, so that a
    child process imports vision_msgs."""
    env = dict(os.environ if env is None else env)
    site = TEST_INSTALL / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    for name, path in (("PYTHONPATH", site), ("LD_LIBRARY_PATH", TEST_INSTALL / "lib")):
        env[name] = f"{path}:{env[name]}" if env.get(name) else str(path)
    env["AMENT_PREFIX_PATH"] = f"{TEST_INSTALL}:{env.get('AMENT_PREFIX_PATH', '')}"
    return env


def run_python(code: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -c code`` in its own process group, ended (by its PID) when it outlives ``timeout``."""
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(process)
        output, _ = process.communicate()
        raise AssertionError(f"python -c ... ran past {timeout} s:\n{output}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


def write_params(path: Path, parameters: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    return path


class NodeProcess:
    """``python -m zeroseg_ros.ros.node`` in its own process group, its output in a log file."""

    def __init__(
        self,
        tmp_path: Path,
        parameters: dict[str, Any],
        name: str = "zeroseg",
        ros_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self.parameters = dict(parameters)
        params_file = write_params(tmp_path / f"{name}.yaml", parameters)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeroseg_ros.ros.node",
                "--ros-args",
                "--params-file",
                str(params_file),
                *ros_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process_group(self.process)
        self._log.close()


@contextmanager
def node_process(
    tmp_path: Path,
    parameters: dict[str, Any],
    name: str = "zeroseg",
    ros_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path, parameters, name, ros_args, env)
    try:
        yield node
    finally:
        node.stop()


class Probe:
    """The test side: publishes images and queries, records every message the zeroseg node publishes."""

    OUTPUTS: ClassVar[dict[str, type]] = {"mask": Image, "mask_color": Image, "confidence": Image, "overlay": Image}

    def __init__(self, namespace: str = "") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("zeroseg_test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.prefix = prefix = f"{namespace}/" if namespace else ""
        for topic, msg_type in self.OUTPUTS.items():
            self._record(msg_type, prefix + topic, RELIABLE)
        self._record(String, prefix + "labels", LATCHED)
        self._record(DiagnosticArray, "/diagnostics", RELIABLE)
        from zeroseg_ros.msg import Segmentation

        self._record(Segmentation, prefix + "segmentation", RELIABLE)
        self.image_pub = self.node.create_publisher(Image, prefix + "image", RELIABLE)
        self.queries_pub = self.node.create_publisher(String, prefix + "queries", LATCHED)

    def _record(self, msg_type: type, topic: str, qos: QoSProfile) -> None:
        name = topic.rsplit("/", 1)[-1]
        self.node.create_subscription(msg_type, topic, lambda msg: self.received[name].append(msg), qos)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Calls service ``name`` like any client would; its response."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=10.0), f"service {name} not found"
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f"the reply of {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(remaining, 0.05))

    def wait_for_fresh_diagnostics(self, timeout: float = 10.0) -> None:
        """Until a diagnostics report stamped after this call has arrived. Counting new arrivals would not do:
        reports queued while the probe did not spin arrive first, oldest first."""
        since = time.time_ns()  # the node stamps its reports with the same (system) clock
        self.spin_until(
            lambda: any(stamp_ns(array.header) >= since for array in self.received["diagnostics"]),
            timeout,
            "a diagnostics report made from now on",
        )

    def wait_for_node(self, node: NodeProcess, timeout: float = 90.0, subscribes_image: bool = True) -> None:
        """Until the node is ready for a test's first frame, whatever the CPU's speed: its model is loaded
        (diagnostics arrive), the labels of its ``queries`` parameter are in use (frames before that are
        skipped), its image subscription has matched this probe's publisher on both sides (a best-effort reader
        drops data from a writer it has not matched yet), and its output topics are discovered."""

        def alive() -> None:
            if not node.alive():
                raise AssertionError(f"node exited with {node.process.returncode}:\n{node.log()}")

        def ready() -> bool:
            alive()
            diagnostics = self.diagnostics()
            if not diagnostics:
                return False
            if str(node.parameters.get("queries", "")).strip():
                return bool(diagnostics.get("queries")) and not diagnostics.get("pending_queries")
            return True

        self.spin_until(ready, timeout, "the node's diagnostics with its queries in use")
        if subscribes_image:

            def matched() -> bool:
                alive()
                return self.image_pub.get_subscription_count() > 0 and (
                    int(self.diagnostics().get("camera_publishers", "0")) > 0
                )

            self.spin_until(matched, 30.0, "the node's image subscription, matched on both sides")
        outputs = [f"{self.prefix}{topic}" for topic in (*self.OUTPUTS, "segmentation")]
        self.spin_until(
            lambda: all(self.node.count_publishers(topic) > 0 for topic in outputs), 10.0, "the node's publishers"
        )
        self.spin_for(0.2)  # discovery done; let the matched readers settle

    def diagnostics(self) -> dict[str, str]:
        """The key/values of the latest zeroseg diagnostics status ({} before the first)."""
        for array in reversed(self.received["diagnostics"]):
            for status in array.status:
                if "zero-shot segmentation" in status.name:
                    return {value.key: value.value for value in status.values}
        return {}

    def publish_frame(self, pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "camera") -> Image:
        msg = array_to_image(pixels, encoding, Image)
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.image_pub.publish(msg)
        return msg

    def publish_queries(self, text: str) -> None:
        self.queries_pub.publish(String(data=text))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class DepthProbe:
    """The camera side of depth: depth and camera_info publishers (a camera of ``width x height`` pixels and
    camera matrix ``k``), and recorders of the 3-D outputs."""

    def __init__(self, test_probe: Probe, width: int, height: int, k: list[float]) -> None:
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from visualization_msgs.msg import MarkerArray
        from zeroseg_ros.msg import SegmentedObjects

        self.probe = test_probe
        self.width, self.height, self.k = width, height, k
        node = test_probe.node
        self.depth_pub = node.create_publisher(Image, "depth", RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", RELIABLE)
        self.camera_info_type, self.image_type = CameraInfo, Image
        for msg_type, topic in (
            (PointCloud2, "points"),
            (SegmentedObjects, "objects"),
            (MarkerArray, "objects/markers"),
            (Image, "heatmap"),
        ):
            name = topic.replace("/", "_")
            node.create_subscription(msg_type, topic, lambda msg, n=name: test_probe.received[n].append(msg), RELIABLE)

    def wait_for_node(self) -> None:
        """Until the node's depth and camera_info subscriptions have matched these publishers on both sides (a
        best-effort reader drops what a writer it has not matched yet sends) and its 3-D outputs are found."""
        node, diagnostics = self.probe.node, self.probe.diagnostics
        self.probe.spin_until(
            lambda: (
                self.depth_pub.get_subscription_count() > 0
                and self.info_pub.get_subscription_count() > 0
                and int(diagnostics().get("depth_publishers", "0")) > 0
                and int(diagnostics().get("camera_info_publishers", "0")) > 0
            ),
            30.0,
            "the node's depth and camera_info subscriptions, matched on both sides",
        )
        topics = ("points", "objects", "objects/markers", "heatmap")
        self.probe.spin_until(lambda: all(node.count_publishers(t) for t in topics), 10.0, "the 3-D publishers")
        self.probe.spin_for(0.3)

    def publish_camera_info(self, stamp: int, k: list[float] | None = None) -> None:
        info = self.camera_info_type(width=self.width, height=self.height)
        info.header.frame_id = "camera"
        info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        info.k = k if k is not None else self.k
        self.info_pub.publish(info)

    def publish_depth(self, pixels: np.ndarray, encoding: str, stamp: int, step: int | None = None) -> None:
        msg = array_to_image(pixels, encoding, self.image_type)
        msg.header.frame_id = "camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        if step is not None:
            msg.step = step
        self.depth_pub.publish(msg)


@contextmanager
def probe(namespace: str = "") -> Iterator[Probe]:
    test_probe = Probe(namespace)
    try:
        yield test_probe
    finally:
        test_probe.close()


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def make_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A frame with some structure (coloured blocks and noise), RGB uint8."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[: height // 2, : width // 2] += np.array([180, 20, 20], dtype=np.uint8)
    image[height // 2 :, width // 2 :] += np.array([20, 180, 20], dtype=np.uint8)
    return image
