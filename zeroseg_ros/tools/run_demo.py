"""``zeroseg run``: the main job. Camera -> zeroseg node -> overlay and mask PNGs on disk.

Starts the demo camera (or uses a real camera topic) and the zeroseg node as separate processes, both with the
parameters file that the launch file uses (config/zeroseg.yaml) plus a small file of command-line overrides,
and saves what the node publishes. It needs only rclpy, so it works where ROS 2 ``launch`` is absent; on a
full ROS 2 install ``ros2 launch zeroseg_ros zeroseg.launch.py`` starts the same node with the same file.

Without weights (no internet, no checkpoint) the node stops with its missing-weights message and so does this
command; ``--random-weights`` runs the whole chain as a smoke test whose masks mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from zeroseg_ros.core.config import split_words
from zeroseg_ros.core.queries import parse_queries
from zeroseg_ros.ros.demo_camera import DEMO_QUERIES
from zeroseg_ros.ros.transport import config_file, fastdds_environment
from zeroseg_ros.tools.process_group import stop_process_group

# The demo's nodes live in their own namespace, so their topics do not mix with a robot's.
NAMESPACE = "/zeroseg_demo"
MASKS_KEPT = 16  # masks waiting for their overlay; older ones go (no overlay comes with publish_overlay false)

RANDOM_WEIGHTS_BANNER = (
    "!!! RANDOM WEIGHTS: this is a smoke test of the camera -> node -> disk chain. The network has random "
    "weights, so every mask and overlay it writes is MEANINGLESS. Give real weights with --pretrained (internet) "
    "or --checkpoint FILE (offline). !!!"
)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Node parameters given on the command line (they win over the parameters file)."""
    values: dict[str, Any] = {"queries": args.queries}
    for name in ("model", "pretrained", "checkpoint", "cache_dir", "device"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.random_weights:
        values["random_weights"] = True
    return values


class ChildProcess:
    """A ROS process in its own process group, ended by SIGINT then SIGKILL."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(self) -> None:
        stop_process_group(self.process)


def ros_command(module: str, params_files: Sequence[Path], remaps: dict[str, str]) -> list[str]:
    command = [sys.executable, "-m", module, "--ros-args"]
    for path in params_files:
        command += ["--params-file", str(path)]
    for source, target in remaps.items():
        command += ["-r", f"{source}:={target}"]
    return command


class PendingMasks:
    """Masks by frame stamp until their overlay arrives; only the ``MASKS_KEPT`` newest are kept."""

    def __init__(self, kept: int = MASKS_KEPT) -> None:
        self._kept = kept
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._masks)

    def put(self, stamp: int, mask: np.ndarray) -> None:
        self._masks[stamp] = mask
        while len(self._masks) > self._kept:
            self._masks.popitem(last=False)

    def pop(self, stamp: int) -> np.ndarray | None:
        return self._masks.pop(stamp, None)


def labels_file_text(labels: Sequence[str]) -> str:
    """What ``labels.txt`` holds: each mask value and its label, one a line, 0 being the background."""
    return "".join(f"{value} {label}\n" for value, label in enumerate(["background", *labels]))


def image_to_bgr(msg: Any) -> np.ndarray:
    from zeroseg_ros.ros.image_codec import image_to_array

    pixels = image_to_array(msg)
    return pixels if msg.encoding == "bgr8" else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.random_weights:
        print(RANDOM_WEIGHTS_BANNER, flush=True)
    params_file = args.params_file or config_file("zeroseg.yaml")
    # Both children publish 640x480 frames: without a larger shared-memory segment Fast DDS loses them.
    child_env = fastdds_environment(os.environ)
    work_dir = Path(tempfile.mkdtemp(prefix="zeroseg-run-"))
    override_file = work_dir / "overrides.yaml"
    override_file.write_text(yaml.safe_dump({"/**/zeroseg": {"ros__parameters": overrides(args)}}))
    node_remaps = {"__ns": NAMESPACE}
    if args.camera_topic:
        node_remaps["image"] = args.camera_topic

    children: list[ChildProcess] = []
    rclpy.init(args=["zeroseg_run"])
    saver = rclpy.create_node("zeroseg_run_saver")
    saved: list[Path] = []
    masks = PendingMasks()
    # The labels as the node publishes them (vocabularies expanded, synonyms folded); parsed here until then.
    labels = [query.name for query in parse_queries(args.queries)]
    labels_in_use: list[bool] = []
    try:
        node = ChildProcess(
            "zeroseg node", ros_command("zeroseg_ros.ros.node", [params_file, override_file], node_remaps), child_env
        )
        children.append(node)
        camera_command: list[str] | None = None
        if not args.camera_topic:
            camera_params = work_dir / "camera.yaml"
            camera_params.write_text(
                yaml.safe_dump({"/**/zeroseg_demo_camera": {"ros__parameters": {"rate": float(args.rate)}}})
            )
            camera_command = ros_command(
                "zeroseg_ros.ros.demo_camera", [params_file, camera_params], {"__ns": NAMESPACE}
            )

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)

        def on_mask(msg: Image) -> None:
            from zeroseg_ros.ros.image_codec import image_to_array

            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            masks.put(key, image_to_array(msg))

        def on_labels(msg: String) -> None:
            labels[:] = split_words(msg.data)
            labels_in_use.append(bool(labels))

        def on_overlay(msg: Image) -> None:
            if len(saved) >= args.frames:
                return
            index = len(saved) + 1
            path = out_dir / f"overlay_{index:04d}.png"
            cv2.imwrite(str(path), image_to_bgr(msg))
            key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            mask = masks.pop(key)
            if mask is not None:
                cv2.imwrite(str(out_dir / f"mask_{index:04d}.png"), mask)
            saved.append(path)

        saver.create_subscription(Image, f"{NAMESPACE}/mask", on_mask, qos)
        saver.create_subscription(Image, f"{NAMESPACE}/overlay", on_overlay, qos)
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        saver.create_subscription(String, f"{NAMESPACE}/labels", on_labels, latched)
        print(
            f"[zeroseg run] {args.camera_topic or 'demo camera'} -> zeroseg node "
            f"(params {params_file}) -> {out_dir}; queries: {args.queries}",
            flush=True,
        )
        deadline = time.monotonic() + args.timeout
        while len(saved) < args.frames:
            rclpy.spin_once(saver, timeout_sec=0.1)
            # The demo camera starts once the node's labels are in use: no frame of it is skipped.
            if camera_command is not None and any(labels_in_use):
                children.append(ChildProcess("demo camera", camera_command, child_env))
                camera_command = None
            if node.process.poll() is not None:
                print(
                    f"[zeroseg run] the zeroseg node stopped (exit code {node.process.returncode}); its message is "
                    "above. Nothing was written.",
                    file=sys.stderr,
                )
                return node.process.returncode or 1
            if time.monotonic() > deadline:
                print(
                    f"[zeroseg run] timed out after {args.timeout:.0f} s with {len(saved)} of {args.frames} "
                    "overlays written (is the camera topic publishing?)",
                    file=sys.stderr,
                )
                return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for child in reversed(children):
            child.stop()
        saver.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(work_dir, ignore_errors=True)
    (out_dir / "labels.txt").write_text(labels_file_text(labels))
    print(
        f"[zeroseg run] wrote {len(saved)} overlays and masks to {out_dir} (mask values 1..{len(labels)}: "
        f"{', '.join(labels)}; labels.txt)",
        flush=True,
    )
    if args.random_weights:
        print(RANDOM_WEIGHTS_BANNER, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="main job: demo camera (or a real camera topic) -> zeroseg node -> overlay PNGs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--queries", "-q", default=DEMO_QUERIES, help="labels to segment (%(default)s)")
    parser.add_argument("--out", "-o", type=Path, default=Path("out/demo"), help="output folder (%(default)s)")
    parser.add_argument("--frames", type=int, default=20, help="overlays to write before stopping (%(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    parser.add_argument("--rate", type=float, default=5.0, help="demo camera frame rate in Hz (%(default)s)")
    parser.add_argument("--camera-topic", default=None, help="a real camera's image topic instead of the demo")
    parser.add_argument("--params-file", type=Path, default=None, help="node parameters (config/zeroseg.yaml)")
    model = parser.add_argument_group("model (override the parameters file)")
    model.add_argument("--model", default=None, help="open_clip model name")
    model.add_argument("--pretrained", default=None, help="open_clip pretrained tag (downloads, needs internet)")
    model.add_argument("--checkpoint", default=None, help="local checkpoint file (offline)")
    model.add_argument("--cache-dir", default=None, help="where downloaded weights are kept")
    model.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    model.add_argument(
        "--random-weights", action="store_true", help="smoke test with random weights: masks mean nothing"
    )
    parser.set_defaults(func=run)
