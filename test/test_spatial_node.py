"""The node's 3-D and object outputs end to end, in its own process over FastDDS (random weights): colour,
depth and camera_info with shared stamps in; points, objects, objects/markers and heatmap out with the colour
frame's header; frames without depth still answered; bad depth input logged, counted, survived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_helpers import FAST_NODE_PARAMETERS, DepthProbe, Probe, make_frame, node_process, probe, stamp_ns

from zeroseg_ros.ros.image_codec import image_to_array

pytestmark = pytest.mark.ros

HEIGHT, WIDTH = 48, 64
F, CX, CY = 60.0, 31.5, 23.5
K = [F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0]
SECOND = 1_000_000_000  # stamps of the bad-input frames lie far apart: no frame pairs with another's depth
QUERIES = "cat, dog, car, tree, road"
PARAMETERS = {
    **FAST_NODE_PARAMETERS,
    "queries": QUERIES,
    "method": "maskclip",  # with random weights, its labels vary over the frame
    "use_depth": True,
    "min_object_pixels": 1,  # every pixel of a label belongs to one object: the objects must add up to the mask
    "heatmap_query": "car",
    "warmup_sizes": "",
    # Random weights: with the default background words and threshold every pixel could go to label 0.
    "background_words": "",
    "probability_threshold": 0.0,
}


def scene_depth_metres(height: int, width: int) -> np.ndarray:
    """A wall at 2 m, a box at 1.5 m in its middle, and no depth in the top rows."""
    depth = np.full((height, width), 2.0)
    depth[height // 4 : height * 3 // 4, width // 4 : width // 2] = 1.5
    depth[: height // 8] = 0.0
    return depth


def received_for(test_probe: Probe, topic: str, stamp: int) -> list[Any]:
    """The messages of ``topic`` with this stamp (a MarkerArray's is its first marker's)."""
    return [
        m
        for m in test_probe.received[topic]
        if stamp_ns(m.markers[0].header if topic == "objects_markers" else m.header) == stamp
    ]


def wait_for_outputs(test_probe: Probe, stamp: int, topics: tuple[str, ...]) -> None:
    test_probe.spin_until(
        lambda: all(received_for(test_probe, t, stamp) for t in topics), 60.0, f"{topics} of frame {stamp}"
    )


def read_points(cloud: Any) -> np.ndarray:
    dtype = np.dtype(
        {
            "names": [f.name for f in cloud.fields],
            "formats": ["<f4" if f.datatype == 7 else "<u2" for f in cloud.fields],
            "offsets": [f.offset for f in cloud.fields],
            "itemsize": cloud.point_step,
        }
    )
    return np.frombuffer(bytes(cloud.data), dtype=dtype, count=cloud.width)


def check_objects_match_the_mask(objects: Any, mask: np.ndarray, confidence: np.ndarray, labels: list[str]) -> None:
    for label_id in range(1, len(labels) + 1):
        own = [o for o in objects.objects if o.label_id == label_id]
        pixels = mask == label_id
        # min_object_pixels is 1: the label's objects partition its pixels.
        assert sum(o.pixel_count for o in own) == pixels.sum()
        total = sum(o.mean_confidence * o.pixel_count for o in own)
        assert total == pytest.approx(float(confidence[pixels].sum()), rel=1e-3, abs=1e-3)
        for found in own:
            assert found.label == labels[label_id - 1]
            x, y, w, h = found.box.x_offset, found.box.y_offset, found.box.width, found.box.height
            inside = pixels[y : y + h, x : x + w]
            assert inside.sum() >= found.pixel_count
            # The box is the tightest: the label touches each of its four sides.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert [o.id for o in objects.objects] == list(range(len(objects.objects)))


@pytest.mark.timeout(240)
def test_colour_depth_and_camera_info_give_points_objects_markers_and_a_heatmap(tmp_path: Path) -> None:
    with node_process(tmp_path, PARAMETERS) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        camera = DepthProbe(test_probe, WIDTH, HEIGHT, K)
        camera.wait_for_node()
        labels = QUERIES.split(", ")

        # Frame 1: depth in millimetres at the colour resolution; frame 2: metres at half the resolution.
        frames = [
            (1_700_000_000_100_000_000, "16UC1", 1),
            (1_700_000_000_200_000_000, "32FC1", 2),
        ]
        for stamp, encoding, shrink in frames:
            metres = scene_depth_metres(HEIGHT // shrink, WIDTH // shrink)
            depth = (metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres.astype(np.float32)
            camera.publish_camera_info(stamp)
            camera.publish_depth(depth, encoding, stamp)
            test_probe.spin_for(0.3)  # the depth arrives before the colour frame it belongs to
            test_probe.publish_frame(make_frame(HEIGHT, WIDTH, seed=stamp % 7), "rgb8", stamp, "camera_optical")
            wait_for_outputs(test_probe, stamp, ("mask", "confidence", "points", "objects", "objects_markers"))

            mask = image_to_array(received_for(test_probe, "mask", stamp)[0])
            confidence = image_to_array(received_for(test_probe, "confidence", stamp)[0])
            (cloud,) = received_for(test_probe, "points", stamp)
            assert cloud.header.frame_id == "camera_optical"
            assert [f.name for f in cloud.fields] == ["x", "y", "z", "label", "confidence"]
            points = read_points(cloud)
            # Every second depth pixel in both directions (points_stride 2) with a label and depth.
            sampled_labels = mask[shrink // 2 :: shrink][::2, shrink // 2 :: shrink][:, ::2]
            has_depth = metres[::2, ::2] > 0
            assert cloud.width == np.count_nonzero((sampled_labels > 0) & has_depth) > 0
            assert set(np.round(points["z"], 3)) <= {1.5, 2.0}
            assert np.all(points["label"] > 0) and np.all(points["label"] <= len(labels))
            if shrink == 1:  # every point's label and confidence are the mask's at its pixel
                u = np.rint(points["x"] / points["z"] * F + CX).astype(int)
                v = np.rint(points["y"] / points["z"] * F + CY).astype(int)
                np.testing.assert_array_equal(points["label"], mask[v, u])
                np.testing.assert_array_equal(points["confidence"], confidence[v, u])
                assert np.all(v >= HEIGHT // 8)  # no points from the rows without depth

            (objects,) = received_for(test_probe, "objects", stamp)
            assert objects.header.frame_id == "camera_optical" and objects.has_depth
            check_objects_match_the_mask(objects, mask, confidence, labels)
            in_3d = [o for o in objects.objects if o.has_depth]
            assert in_3d and all(1.5 <= o.centroid.z <= 2.0 and 0 < o.valid_depth_fraction <= 1 for o in in_3d)
            (markers,) = received_for(test_probe, "objects_markers", stamp)
            assert markers.markers[0].action == 3  # DELETEALL: objects of the previous frame vanish
            assert sorted(m.id for m in markers.markers[1:] if m.type == 1) == [o.id for o in in_3d]

            test_probe.spin_until(lambda s=stamp: received_for(test_probe, "heatmap", s), 10.0, "the heatmap")
            heatmap = image_to_array(received_for(test_probe, "heatmap", stamp)[0])
            assert heatmap.shape == (HEIGHT, WIDTH)
            car = mask == labels.index("car") + 1
            # The heat map sums the softmax denominator in its own order (labels.query_probability).
            np.testing.assert_allclose(heatmap[car], confidence[car], rtol=1e-5, atol=1e-6)

        # Frame 3 has no depth within depth_tolerance: segmented as before, objects in 2-D only, no points.
        lonely = 1_700_000_000_900_000_000
        points_before = len(test_probe.received["points"])
        test_probe.publish_frame(make_frame(HEIGHT, WIDTH, seed=3), "rgb8", lonely, "camera_optical")
        wait_for_outputs(test_probe, lonely, ("mask", "objects", "objects_markers"))
        (objects,) = received_for(test_probe, "objects", lonely)
        assert not objects.has_depth and objects.objects and not any(o.has_depth for o in objects.objects)
        mask = image_to_array(received_for(test_probe, "mask", lonely)[0])
        confidence = image_to_array(received_for(test_probe, "confidence", lonely)[0])
        check_objects_match_the_mask(objects, mask, confidence, labels)
        assert [m.action for m in received_for(test_probe, "objects_markers", lonely)[0].markers] == [3]
        test_probe.spin_for(0.5)
        assert len(test_probe.received["points"]) == points_before

        test_probe.spin_until(
            lambda: test_probe.diagnostics().get("frames_without_depth") == "1", 10.0, "the depth counters"
        )
        diagnostics = test_probe.diagnostics()
        assert (diagnostics["frames_with_depth"], diagnostics["depth_rejected"]) == ("2", "0")
        assert "no depth image within depth_tolerance (0.02 s)" in node.log()
        assert node.alive()


@pytest.mark.timeout(240)
def test_bad_depth_input_is_logged_counted_and_survived(tmp_path: Path) -> None:
    with node_process(tmp_path, PARAMETERS) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        camera = DepthProbe(test_probe, WIDTH, HEIGHT, K)
        camera.wait_for_node()
        millimetres = (scene_depth_metres(HEIGHT, WIDTH) * 1000).astype(np.uint16)
        colour = make_frame(HEIGHT, WIDTH)

        def frame(stamp: int, what: str) -> None:
            test_probe.spin_for(0.3)
            test_probe.publish_frame(colour, "rgb8", stamp)
            # The objects come after the frame's depth pairing (the mask before it): only then may the next
            # step's camera_info and depth arrive, or an early valid camera_info would pair this frame.
            test_probe.spin_until(lambda: received_for(test_probe, "objects", stamp), 60.0, f"the objects ({what})")

        camera.publish_depth(millimetres, "16UC1", 1 * SECOND)  # no camera_info yet
        frame(1 * SECOND, "depth without camera_info")
        camera.publish_camera_info(2 * SECOND, k=[0.0] * 9)
        camera.publish_depth(millimetres, "16UC1", 2 * SECOND)
        frame(2 * SECOND, "K all zero")
        camera.publish_camera_info(3 * SECOND)
        camera.publish_depth(millimetres.astype(np.uint8), "mono8", 3 * SECOND)
        frame(3 * SECOND, "depth of a wrong encoding")
        camera.publish_depth(millimetres, "16UC1", 4 * SECOND, step=WIDTH)  # half of a 16-bit row
        frame(4 * SECOND, "depth with a wrong step")
        camera.publish_depth(millimetres[:, : WIDTH // 2], "16UC1", 5 * SECOND)  # not the colour image's field of view
        frame(5 * SECOND, "depth of a wrong size")
        camera.publish_depth(millimetres, "16UC1", 6 * SECOND)
        frame(6 * SECOND, "good depth")
        test_probe.spin_until(lambda: received_for(test_probe, "points", 6 * SECOND), 30.0, "points of the good frame")

        def frames_counted() -> int:
            values = test_probe.diagnostics()
            return int(values.get("frames_with_depth", "0")) + int(values.get("frames_without_depth", "0"))

        # A diagnostics message from after all six frames (an older one may be the latest received).
        test_probe.spin_until(lambda: frames_counted() == 6, 10.0, "the depth counters of six frames")
        diagnostics = test_probe.diagnostics()
        assert diagnostics["frames_with_depth"] == "1", diagnostics
        assert diagnostics["frames_without_depth"] == "5", (diagnostics, node.log())
        # Frames 1 and 2 both had depth without (valid) camera_info; the camera_info itself is one more.
        assert diagnostics["depth_rejected"] == "6", diagnostics
        assert diagnostics["frames_rejected"] == "0"  # every colour frame was segmented
        log = node.log()
        for message in (
            "depth without camera_info: nothing valid received on /camera_info",
            "camera_info on /camera_info refused: camera matrix K has no usable focal lengths",
            "depth image on /depth refused: encoding must be 16UC1 or 32FC1 (REP 118), got 'mono8'",
            "depth image on /depth refused: step 64 is shorter than one row of 64 16UC1 pixels (128 bytes)",
            "depth image refused: depth image 32x48 does not have the colour image's aspect ratio (64x48)",
        ):
            assert log.count(message) == 1, f"{message!r} not logged once:\n{log}"
        assert "Traceback" not in log
        assert node.alive()
