"""Query changes in the running node (a real process over FastDDS): a pending change shows on /diagnostics and
in the log (with the encoding's progress) while frames keep being answered with the current labels; one query
uses the background preset."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from ros_helpers import FAST_NODE_PARAMETERS, make_frame, node_process, probe, stamp_ns

from zeroseg_ros.ros.image_codec import image_to_array

pytestmark = pytest.mark.ros


@pytest.mark.timeout(300)
def test_a_pending_query_change_shows_while_frames_keep_the_current_labels(tmp_path: Path) -> None:
    # 171 classes x 80 templates = 13,680 prompts: an encoding that takes many diagnostics periods on any CPU.
    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat", "templates": "imagenet80", "background_words": ""}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: test_probe.received["labels"], 60.0, "the latched labels")
        assert test_probe.received["labels"][-1].data == "cat"

        test_probe.publish_queries("@coco-stuff")
        test_probe.spin_until(
            lambda: test_probe.diagnostics().get("pending_queries") == "@coco-stuff", 30.0, "the pending change"
        )
        for stamp in (11, 12):  # frames are still answered, with the current label
            test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=stamp)
            test_probe.spin_until(
                lambda stamp=stamp: (
                    test_probe.received["segmentation"]
                    and stamp_ns(test_probe.received["segmentation"][-1].header) == stamp
                ),
                60.0,
                f"frame {stamp} during the change",
            )
            assert list(test_probe.received["segmentation"][-1].labels) == ["cat"]
        diagnostics = test_probe.diagnostics()
        assert diagnostics["pending_queries"] == "@coco-stuff" and diagnostics["queries"] == "cat"

        def status_message() -> str:
            return next(s.message for s in test_probe.received["diagnostics"][-1].status if "zero-shot" in s.name)

        # A diagnostics message published after the frames: the one before may still say "warming up" (the
        # start-up warm-up takes turns with the encoding at the CPU's cores).
        test_probe.spin_until(lambda: "new queries pending" in status_message(), 30.0, "the pending status")
        assert [msg.data for msg in test_probe.received["labels"]] == ["cat"]  # labels change only when applied
        assert "queries from queries topic: '@coco-stuff'; pending while their text is encoded" in node.log()
        # The encoding's progress: throttled log lines, the first after 2 s.
        test_probe.spin_until(lambda: "encoding 171 queries: " in node.log(), 120.0, "a progress line")
        line = next(line for line in node.log().splitlines() if "encoding 171 queries: " in line)
        # 170 x 80 prompts: "cat" is one of the 171 classes and is cached already.
        assert re.search(r"encoding 171 queries: \d+ % \([\d,]+ of 13,600 prompts\)", line), line
        assert node.alive()


@pytest.mark.timeout(180)
def test_one_query_is_scored_against_the_background_preset_by_default(tmp_path: Path) -> None:
    fast = {name: value for name, value in FAST_NODE_PARAMETERS.items() if name != "background_words"}
    parameters = {**fast, "queries": "fire extinguisher"}  # background_words left at its default
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: test_probe.received["labels"], 60.0, "the latched labels")
        test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=5)
        test_probe.spin_until(lambda: test_probe.received["segmentation"], 60.0, "a segmentation")
        segmentation = test_probe.received["segmentation"][-1]
        assert list(segmentation.labels) == ["fire extinguisher"]
        assert set(np.unique(image_to_array(segmentation.mask))) <= {0, 1}
        # Which pixels the query wins is the random weights' luck; that the preset's 26 background words share the
        # softmax is not: alone, the query's probability would be 1 at every pixel.
        test_probe.spin_until(lambda: test_probe.received["confidence"], 10.0, "the confidence map")
        assert image_to_array(test_probe.received["confidence"][-1]).min() < 0.999
        test_probe.spin_until(lambda: test_probe.diagnostics().get("frames_published") == "1", 10.0, "diagnostics")
        assert test_probe.diagnostics()["background_words"] == "@background"
