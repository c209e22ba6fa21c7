"""Latest frame only: a burst of frames to a slow model is answered for the newest frame, the replaced ones are
counted as dropped, and nothing queues up behind the model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ros_helpers import FAST_NODE_PARAMETERS, make_frame, node_process, probe, stamp_ns

pytestmark = pytest.mark.ros

BURST = 40


@pytest.mark.timeout(240)
def test_a_burst_to_a_slow_model_drops_and_counts_frames(tmp_path: Path) -> None:
    # 224-pixel inputs make the random ViT-S-16 take a few hundred ms a frame on a CPU: far slower than the
    # burst below. Reliable QoS so every frame of the burst reaches the node.
    parameters = {**FAST_NODE_PARAMETERS, "short_side": 224, "reliable": True, "queries": "grass, sky"}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        frame = make_frame(240, 320)
        started = time.monotonic()
        for index in range(1, BURST + 1):
            test_probe.publish_frame(frame, "rgb8", stamp_ns=index)
            test_probe.spin_for(0.005)
        burst_seconds = time.monotonic() - started

        # The newest frame is always answered.
        test_probe.spin_until(
            lambda: test_probe.received["mask"] and stamp_ns(test_probe.received["mask"][-1].header) == BURST,
            120.0,
            "the mask of the last frame of the burst",
        )
        answered = [stamp_ns(mask.header) for mask in test_probe.received["mask"]]

        def settled() -> bool:
            # Every frame the node saw is either segmented or replaced by a newer one: none waits in a queue.
            diagnostics = test_probe.diagnostics()
            counts = [
                int(diagnostics.get(key, -1)) for key in ("frames_published", "frames_dropped", "frames_received")
            ]
            return counts[0] >= len(answered) and counts[0] + counts[1] == counts[2]

        test_probe.spin_until(settled, 20.0, "diagnostics accounting for every frame received")
        diagnostics = test_probe.diagnostics()
        received = int(diagnostics["frames_received"])
        dropped = int(diagnostics["frames_dropped"])
        published = int(diagnostics["frames_published"])

        assert answered == sorted(answered), "outputs must come in frame order"
        assert received >= BURST * 3 // 4, f"the node saw only {received} of {BURST} frames"
        # Every frame the node saw was either segmented or replaced by a newer one (none rejected, none queued).
        assert published + dropped == received
        assert int(diagnostics["frames_rejected"]) == 0
        # The model is much slower than the burst, so most frames are replaced while one is being segmented.
        seconds_per_frame = float(diagnostics["latency_p50_ms"]) / 1000.0
        assert seconds_per_frame > burst_seconds / BURST, "the model is not slower than the burst; test is moot"
        assert dropped >= BURST // 2, f"only {dropped} frames dropped of {received}: frames are queueing"
        # Outputs use depth-1 QoS too, so the probe may miss an intermediate mask, never the newest one.
        assert len(answered) <= published <= BURST // 2
        assert node.alive()
