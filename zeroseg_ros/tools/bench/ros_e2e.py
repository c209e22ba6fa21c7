"""End-to-end ROS measurement: publish 640x480 frames at a set rate, time publish -> mask at a subscriber.

Three processes, each in its own process group so that a hang is ended by its group id:
  - the node (``python -m zeroseg_ros.ros.node``) in a namespace of its own, with the benchmark's model options;
  - a publisher (``python -m zeroseg_ros.tools.bench.ros_e2e --publish ...``) that stamps each frame's header with the
    time it publishes it; with ``--cameras N`` it publishes N cameras (``cam0/image`` ...), each at the rate, in
    an order that rotates every round so that no camera is always first; before the measured frames it sends
    each camera priming frames (frame_id ``PRIMING_FRAME_ID``), one at a time, until the node answers one, so
    that the first measured frame finds the node's subscriptions matched on both sides;
  - this process, which subscribes to the node's ``mask`` (each camera's) and ``/diagnostics``.
Latency is the subscriber's receive time minus the header stamp (the same host clock). The sustained rate is
masks per second between the first and the last mask of the publishing window; ``frames_dropped`` is the
node's own count of frames it replaced in its one-slot mailbox and ``frames_lost_in_transport`` the middleware's
count of frames that never reached it (both from /diagnostics); ``frames_lost`` is the published frames that
produced no mask. With cameras the same figures come per camera too, with each camera's share of the masks.
The node's resident memory (``VmRSS`` at the end of the window, and its peak ``VmHWM``) is read from /proc.
The node and the publisher get config/fastdds_large_frames.xml unless ``--fastdds-profile``
names another profile or ``none``.
Run it with ``zeroseg bench --ros`` (``--rate``, ``--duration``, ``--cameras``, ``--max-batch``, model options;
``--random-weights`` here).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg_ros.ros.transport import FASTDDS_PROFILE_VARIABLES, fastdds_environment
from zeroseg_ros.tools.process_group import stop_process_group

NAMESPACE = "/zeroseg_bench"
FRAME_WIDTH, FRAME_HEIGHT = 640, 480
READY_TIMEOUT_S = 300.0  # the node loads and warms the model before it reports it waits for images
DRAIN_S = 2.5
PRIMING_FRAME_ID = "zeroseg_bench_priming"
PRIMING_WAIT_S = 5.0  # per priming frame: its answer, or send another
PRIMING_TIMEOUT_S = 120.0
NODE_STATUS_SUFFIX = ": zero-shot segmentation"  # the node's own /diagnostics status; cameras': ": camera <name>"


def camera_names(count: int) -> list[str]:
    """The benchmark's camera names: none for 0 (the node's own topics), else cam0, cam1, ..."""
    return [f"cam{index}" for index in range(count)]


def camera_topic(camera: str, name: str) -> str:
    """A camera's topic ``name`` in the benchmark's namespace (the node's own for camera "")."""
    return f"{NAMESPACE}/{camera}/{name}" if camera else f"{NAMESPACE}/{name}"


def resident_memory_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process ``pid`` in MiB, from /proc (NaN where unreadable)."""
    values = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024.0  # kB
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def node_parameters(args: argparse.Namespace) -> list[str]:
    """``-p name:=value`` for the model and segmentation options the benchmark was given."""
    values: dict[str, object] = {
        "queries": args.queries,
        "model": args.model,
        "pretrained": args.pretrained,
        "random_weights": args.random_weights,
        "device": args.device,
        "precision": args.precision,
    }
    optional = {
        "checkpoint": args.checkpoint,
        "cache_dir": args.cache_dir,
        "method": args.method,
        "templates": args.templates,
        "short_side": args.short_side,
        "reliable": args.reliable or None,
        "image_encoder_engine": str(Path(args.engine).resolve()) if args.engine else None,
        "onednn": "false" if args.no_onednn else None,
        "cameras": ",".join(camera_names(args.cameras)) or None,
        "max_batch": args.max_batch,
    }
    values.update({name: value for name, value in optional.items() if value is not None})
    parameters: list[str] = []
    for name, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parameters += ["-p", f"{name}:={text}" if isinstance(value, bool | int) else f"{name}:='{text}'"]
    return parameters


def _start(command: list[str], env: dict[str, str], log_path: str) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115 - the child writes to it until it ends
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


class _Listener:
    """Masks (receive time, latency) per camera and the latest diagnostics values of the node and of each camera,
    from a spinning thread."""

    def __init__(self, cameras: list[str]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("zeroseg_bench_listener", context=self.context)
        self.lock = threading.Lock()
        self.masks: dict[str, list[tuple[float, float]]] = {camera: [] for camera in cameras or [""]}
        self.diagnostics: dict[str, str] = {}
        self.camera_diagnostics: dict[str, dict[str, str]] = {}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for camera in self.masks:
            self.node.create_subscription(
                Image, camera_topic(camera, "mask"), lambda msg, camera=camera: self._on_mask(camera, msg), reliable
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self._rclpy.ok(context=self.context):
                self._executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass  # close() shut the context down

    def _on_mask(self, camera: str, msg: Any) -> None:
        if msg.header.frame_id == PRIMING_FRAME_ID:
            return
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            self.masks[camera].append((now, (now - stamp) * 1000.0))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            values = {"message": status.message, **{kv.key: kv.value for kv in status.values}}
            with self.lock:
                if status.name.startswith(NAMESPACE) and status.name.endswith(NODE_STATUS_SUFFIX):
                    self.diagnostics = values
                elif status.name.startswith(NAMESPACE) and ": camera " in status.name:
                    self.camera_diagnostics[status.name.rsplit(": camera ", 1)[1]] = values

    def close(self) -> None:
        self._rclpy.shutdown(context=self.context)
        self._thread.join(5.0)
        self.node.destroy_node()


def _mask_figures(masks: list[tuple[float, float]], ended: float) -> dict[str, Any]:
    """Count, rate (from the first mask to the last one of the publishing window: the publisher's start-up is
    not counted) and latency percentiles of one camera's masks (or all cameras')."""
    in_window = sorted(m[0] for m in masks if m[0] <= ended)
    rate = (len(in_window) - 1) / (in_window[-1] - in_window[0]) if len(in_window) > 1 else 0.0
    latencies = np.asarray([m[1] for m in masks], dtype=np.float64)
    return {
        "masks_received": len(masks),
        "output_rate_hz": rate,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p95": float(np.percentile(latencies, 95)) if latencies.size else None,
        },
    }


def run_ros_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start node, listener and publisher; publish ``args.duration`` s at ``args.rate`` Hz; report."""
    env = fastdds_environment(os.environ, args.fastdds_profile)
    # The children import this same zeroseg_ros, wherever the benchmark was started from.
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))  # a run does not hear other runs
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    log_dir = os.environ.get("ZEROSEG_BENCH_LOGS", "/tmp")
    node_cmd = [
        sys.executable,
        "-m",
        "zeroseg_ros.ros.node",
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
        *node_parameters(args),
    ]
    cameras = camera_names(args.cameras)
    node = _start(node_cmd, env, os.path.join(log_dir, "zeroseg_bench_node.log"))
    listener = _Listener(cameras)
    publisher = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # the node reports "no images received yet" once its model and queries are ready
            with listener.lock:
                ready = listener.diagnostics.get("message") == "no images received yet"
            if ready:
                break
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the node did not become ready (exit code {node.poll()}); see {log_dir}/zeroseg_bench_node.log"
                )
            time.sleep(0.2)
        publish_cmd = [
            sys.executable,
            "-m",
            "zeroseg_ros.tools.bench.ros_e2e",
            "--publish",
            ",".join(camera_topic(camera, "image") for camera in cameras or [""]),
            "--answers",
            ",".join(camera_topic(camera, "mask") for camera in cameras or [""]),
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration),
            *(["--reliable"] if args.reliable else []),
        ]
        started = time.time()
        publisher = _start(publish_cmd, env, os.path.join(log_dir, "zeroseg_bench_publisher.log"))
        publisher.wait(args.duration + 60.0)
        with open(os.path.join(log_dir, "zeroseg_bench_publisher.log")) as log:
            words = log.read().split()  # the publisher's last line is the number of frames it sent
        frames_published = int(words[-1]) if words and words[-1].isdigit() else -1
        ended = time.time()
        memory_mib = resident_memory_mib(node.pid)
        time.sleep(DRAIN_S)  # frames still in flight, and one more /diagnostics message
        with listener.lock:
            masks = {camera: [m for m in got if m[0] >= started] for camera, got in listener.masks.items()}
            diagnostics = dict(listener.diagnostics)
            camera_diagnostics = {camera: dict(values) for camera, values in listener.camera_diagnostics.items()}
    finally:
        if publisher is not None:
            stop_process_group(publisher)
        listener.close()
        stop_process_group(node)
    everything = [m for got in masks.values() for m in got]
    total = _mask_figures(everything, ended)
    report: dict[str, Any] = {
        "frame": [FRAME_WIDTH, FRAME_HEIGHT],
        "cameras": len(cameras),
        "publish_rate_hz": args.rate,
        "duration_s": args.duration,
        "frames_published": frames_published,
        **total,
        "frames_dropped": int(diagnostics.get("frames_dropped", -1)),
        "frames_received_by_node": int(diagnostics.get("frames_received", -1)),
        "frames_lost_in_transport": int(diagnostics.get("frames_lost_in_transport", -1)),
        "fastdds_profile": next((env[v] for v in FASTDDS_PROFILE_VARIABLES if env.get(v)), None),
        "frames_lost": frames_published - len(everything) if frames_published >= 0 else None,
        "node_latency_ms": {"p50": diagnostics.get("latency_p50_ms"), "p95": diagnostics.get("latency_p95_ms")},
        "node_rss_mib": memory_mib[0],
        "node_peak_rss_mib": memory_mib[1],
        "device": diagnostics.get("device"),
        "method": diagnostics.get("method"),
    }
    if cameras:
        report["per_camera"] = {
            camera: {
                **_mask_figures(masks[camera], ended),
                "share": len(masks[camera]) / len(everything) if everything else 0.0,
                "frames_dropped": int(camera_diagnostics.get(camera, {}).get("frames_dropped", -1)),
                "frames_received_by_node": int(camera_diagnostics.get(camera, {}).get("frames_received", -1)),
            }
            for camera in cameras
        }
    return report


def publish(topics: list[str], answers: list[str], rate: float, duration: float, reliable: bool) -> int:
    """Publisher process: ``duration`` s of 640x480 rgb8 frames at ``rate`` Hz on each topic (one per camera),
    each stamped as it is sent, the topics' order rotating every round, once each camera's priming frame has
    been answered on its ``answers`` topic (the node's mask topic; without answers, once each topic has a
    subscriber, or after 5 s). Prints the number of frames sent.

    Best effort like a camera driver, or reliable (to match a node started with ``reliable:=true``).
    """
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from zeroseg_ros.tools.bench.measure import synthetic_frame

    rclpy.init()
    node = rclpy.create_node("zeroseg_bench_publisher")
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(depth=1, reliability=reliability)
    publishers = [node.create_publisher(Image, topic, qos) for topic in topics]
    messages = []
    for index in range(len(topics)):  # each camera its own picture
        msg = Image(height=FRAME_HEIGHT, width=FRAME_WIDTH, encoding="rgb8", step=FRAME_WIDTH * 3)
        msg.data = synthetic_frame(FRAME_HEIGHT, FRAME_WIDTH, seed=index).tobytes()
        messages.append(msg)
    primed: set[int] = set()
    for index, topic in enumerate(answers):
        node.create_subscription(
            Image,
            topic,
            lambda mask, index=index: primed.add(index) if mask.header.frame_id == PRIMING_FRAME_ID else None,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
    deadline = time.monotonic() + 5.0  # without answers: let discovery match the subscriptions first
    while not answers and any(p.get_subscription_count() == 0 for p in publishers) and time.monotonic() < deadline:
        time.sleep(0.05)
    # One priming frame per camera at a time (a second one could replace the first in the node's mailbox): its
    # answer shows that the node takes this publisher's frames, which a publisher-side match alone does not.
    deadline = time.monotonic() + PRIMING_TIMEOUT_S
    for index, (publisher, msg) in enumerate(zip(publishers, messages[: len(answers)], strict=False)):
        msg.header.frame_id = PRIMING_FRAME_ID
        while index not in primed:
            if time.monotonic() > deadline:
                print(
                    f"no answer to a priming frame on {answers[index]} within {PRIMING_TIMEOUT_S:.0f} s",
                    file=sys.stderr,
                )
                return 1
            if publisher.get_subscription_count() == 0:  # not discovered yet
                rclpy.spin_once(node, timeout_sec=0.05)
                continue
            msg.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(msg)
            wait_until = time.monotonic() + PRIMING_WAIT_S
            while index not in primed and time.monotonic() < wait_until:
                rclpy.spin_once(node, timeout_sec=0.05)
        msg.header.frame_id = ""
    sent = rounds = 0
    start = time.monotonic()
    while time.monotonic() < start + duration:
        for step in range(len(topics)):
            index = (rounds + step) % len(topics)
            messages[index].header.stamp = node.get_clock().now().to_msg()
            publishers[index].publish(messages[index])
            sent += 1
        rounds += 1
        time.sleep(max(0.0, start + rounds / rate - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()
    print(sent, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="publisher side of `zeroseg bench --ros`")
    parser.add_argument("--publish", required=True, help="image topics, comma separated (one per camera)")
    parser.add_argument(
        "--answers",
        default="",
        help="the node's mask topics, one per image topic (priming frames are answered there); empty: no priming",
    )
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--reliable", action="store_true")
    args = parser.parse_args(argv)
    answers = [topic for topic in args.answers.split(",") if topic]
    return publish(args.publish.split(","), answers, args.rate, args.duration, args.reliable)


if __name__ == "__main__":
    sys.exit(main())
