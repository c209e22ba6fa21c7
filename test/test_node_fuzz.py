"""Fuzz: over a thousand malformed images and query strings do not kill the node, do not grow its memory,
and the next good frame is still answered."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from ros_helpers import FAST_NODE_PARAMETERS, make_frame, node_process, probe, stamp_ns
from sensor_msgs.msg import Image
from std_msgs.msg import String

pytestmark = pytest.mark.ros

MALFORMED_IMAGES = 1200
MALFORMED_QUERIES = 120
RSS_MARGIN_BYTES = 40 * 1024 * 1024


def malformed_image(index: int, rng: np.random.Generator) -> Image:
    """One of several kinds of broken sensor_msgs/Image, chosen by ``index``."""
    msg = Image(height=int(rng.integers(1, 40)), width=int(rng.integers(1, 40)), encoding="rgb8")
    msg.step = msg.width * 3
    size = msg.step * msg.height
    kind = index % 9
    if kind == 0:
        msg.encoding = str(rng.choice(["nv21", "rgb16", "", "16UC3", "32FC1", "RGB8", "rgb 8", "ünï"]))
    elif kind == 1:
        size -= int(rng.integers(1, size + 1))  # data too short (possibly empty)
    elif kind == 2:
        size += int(rng.integers(1, 100))  # data too long
    elif kind == 3:
        msg.step -= 1  # rows shorter than the pixels they must hold
        size = msg.step * msg.height
    elif kind == 4:
        msg.width = 0
    elif kind == 5:
        msg.height, msg.width, msg.step = 100_000, 100_000, 300_000  # far over max_pixels, tiny data
    elif kind == 6:
        msg.height, msg.width, msg.step = 2**32 - 1, 2**32 - 1, 2**32 - 1  # uint32 extremes
        size = 64
    elif kind == 7:
        msg.encoding, msg.step = "mono16", msg.width * 2
        size = msg.step * msg.height - 1  # odd number of bytes for 16-bit pixels
    else:
        msg.encoding = "rgba8"  # step of rgb8 for a 4-channel encoding
    msg.data = rng.integers(0, 256, max(size, 0), dtype=np.uint8).tobytes()
    return msg


def malformed_queries(index: int) -> str:
    return [
        "",
        "   ",
        ",, ,",
        "cat|",
        ", ".join(f"label {n}" for n in range(500)),  # hundreds of queries
        "x" * 5000,  # one absurdly long phrase
        "dog, dog",
        "|||",
    ][index % 8]


@pytest.mark.timeout(240)
def test_malformed_messages_leave_the_node_answering_without_growing(tmp_path: Path) -> None:
    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "reliable": True}
    rng = np.random.default_rng(0)
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        node_memory = psutil.Process(node.pid)

        # Warm up: a few good frames so allocator pools and caches reach their working size.
        for index in range(1, 4):
            test_probe.publish_frame(make_frame(48, 64, seed=index), "rgb8", stamp_ns=index)
            test_probe.spin_until(
                lambda index=index: any(stamp_ns(m.header) == index for m in test_probe.received["mask"]),
                60.0,
                f"warm-up frame {index}",
            )
        rss_before = node_memory.memory_info().rss

        started = time.monotonic()
        for index in range(MALFORMED_IMAGES):
            test_probe.image_pub.publish(malformed_image(index, rng))
            if index % (MALFORMED_IMAGES // MALFORMED_QUERIES) == 0:
                test_probe.queries_pub.publish(String(data=malformed_queries(index)))
            test_probe.spin_for(0.001)
        fuzz_seconds = time.monotonic() - started
        masks_after_warmup = len(test_probe.received["mask"])

        test_probe.publish_frame(make_frame(48, 64, seed=9), "rgb8", stamp_ns=999)
        test_probe.spin_until(
            lambda: any(stamp_ns(m.header) == 999 for m in test_probe.received["mask"]), 60.0, "the good frame"
        )
        test_probe.spin_until(
            lambda: int(test_probe.diagnostics().get("frames_published", 0)) >= 4, 10.0, "diagnostics"
        )
        rss_after = node_memory.memory_info().rss
        diagnostics = test_probe.diagnostics()

        assert node.alive()
        # No malformed message produced an output, and the queries stayed the last good ones.
        assert len(test_probe.received["mask"]) == masks_after_warmup + 1
        assert test_probe.received["labels"][-1].data == "cat, dog"
        assert list(test_probe.received["segmentation"][-1].labels) == ["cat", "dog"]
        # Most malformed frames reached the worker and were refused (the rest were replaced while waiting).
        assert int(diagnostics["frames_rejected"]) >= MALFORMED_IMAGES // 4, diagnostics
        assert int(diagnostics["frames_published"]) == 4
        assert int(diagnostics["frames_rejected"]) + int(diagnostics["frames_dropped"]) + 4 == int(
            diagnostics["frames_received"]
        )
        assert diagnostics["last_rejection"]
        growth = rss_after - rss_before
        assert growth < RSS_MARGIN_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB over {fuzz_seconds:.1f} s of fuzz"
        log = node.log()
        assert "frame skipped:" in log and "keeping the previous queries" in log
        assert "Traceback" not in log
