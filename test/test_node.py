"""The zeroseg node end to end, in its own process over FastDDS: frames in, mask/confidence/overlay/
Segmentation out with the input's header; queries changed at run time, from a default-QoS publisher too;
parameters; a settings change the exported encoder cannot run is refused and leaves the node working."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_helpers import FAST_NODE_PARAMETERS, make_frame, node_process, probe, stamp_ns

from zeroseg_ros.ros.image_codec import image_to_array

pytestmark = pytest.mark.ros


def set_parameters(test_probe, node_name: str, **values: object):
    """Calls the node's set_parameters service; returns the per-parameter results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = test_probe.node.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0), "set_parameters service not found"
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(request)
    test_probe.spin_until(future.done, 30.0, "set_parameters reply")
    return future.result().results


@pytest.mark.timeout(180)
def test_frames_are_segmented_with_the_input_header(tmp_path: Path) -> None:
    queries = "cat, dog|puppy, tree"
    # Queries only, no threshold: every pixel goes to a query (test_node_queries.py runs the default background).
    parameters = {**FAST_NODE_PARAMETERS, "queries": queries, "background_words": "", "probability_threshold": 0.0}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        rgb = make_frame(48, 64, seed=1)
        sent = [
            test_probe.publish_frame(rgb, "rgb8", stamp_ns=1_700_000_000_123_456_789, frame_id="front_camera"),
        ]
        test_probe.spin_until(lambda: len(test_probe.received["segmentation"]) >= 1, 60.0, "rgb8 outputs")
        test_probe.spin_until(lambda: len(test_probe.received["overlay"]) >= 1, 10.0, "overlay")
        sent.append(test_probe.publish_frame(rgb[:, :, ::-1].copy(), "bgr8", stamp_ns=42, frame_id="rear_camera"))
        test_probe.spin_until(lambda: len(test_probe.received["overlay"]) >= 2, 60.0, "bgr8 outputs")
        test_probe.spin_until(lambda: len(test_probe.received["segmentation"]) >= 2, 10.0, "segmentation")

        for index, frame in enumerate(sent):
            mask = test_probe.received["mask"][index]
            confidence = test_probe.received["confidence"][index]
            overlay = test_probe.received["overlay"][index]
            segmentation = test_probe.received["segmentation"][index]
            for output in (mask, confidence, overlay, segmentation, segmentation.mask):
                assert output.header.frame_id == frame.header.frame_id
                assert stamp_ns(output.header) == stamp_ns(frame.header)
            assert (mask.height, mask.width, mask.encoding) == (48, 64, "mono8")
            labels = image_to_array(mask)
            assert labels.max() <= 3
            assert confidence.encoding == "32FC1"
            probabilities = image_to_array(confidence)
            assert probabilities.shape == (48, 64)
            assert np.all((probabilities >= 0) & (probabilities <= 1))
            assert (overlay.height, overlay.width) == (48, 64)
            assert overlay.encoding == ("rgb8" if frame.encoding == "rgb8" else "bgr8")
            # The overlay shows the frame where it is background and colours the labelled pixels.
            assert not np.array_equal(image_to_array(overlay), image_to_array(frame))

            assert list(segmentation.labels) == ["cat", "dog", "tree"]
            assert list(segmentation.label_ids) == [1, 2, 3]
            assert list(segmentation.areas) == [int((labels == i).sum()) for i in (1, 2, 3)]
            assert sum(segmentation.areas) == 48 * 64  # no threshold, no background words
            for label_id, score in zip(segmentation.label_ids, segmentation.scores, strict=True):
                won = labels == label_id
                expected = float(probabilities[won].mean()) if won.any() else 0.0
                assert score == pytest.approx(expected, abs=1e-4)
            np.testing.assert_array_equal(image_to_array(segmentation.mask), labels)
        assert test_probe.received["labels"][-1].data == "cat, dog, tree"
        test_probe.spin_until(lambda: test_probe.diagnostics().get("frames_published") == "2", 10.0, "diagnostics")
        diagnostics = test_probe.diagnostics()
        assert (diagnostics["model"], diagnostics["method"], diagnostics["device"]) == ("ViT-S-16", "scclip", "cpu")
        assert diagnostics["backend"].startswith("PyTorch fp32")
        assert diagnostics["activation"] == "GELU" and "precision fp32 (set explicitly)" in diagnostics["choices"]
        assert float(diagnostics["latency_p95_ms"]) >= float(diagnostics["latency_p50_ms"]) > 0
        assert diagnostics["frames_dropped"] == "0" and diagnostics["frames_rejected"] == "0"
        assert node.alive()


@pytest.mark.timeout(180)
def test_queries_change_at_run_time_by_topic_and_parameter(tmp_path: Path) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "road, car"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: test_probe.received["labels"], 10.0, "the latched labels")
        assert test_probe.received["labels"][-1].data == "road, car"

        test_probe.publish_queries("person|pedestrian, bicycle, traffic cone, door handle")
        test_probe.spin_until(
            lambda: test_probe.received["labels"][-1].data == "person, bicycle, traffic cone, door handle",
            30.0,
            "labels from the queries topic",
        )
        test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=7)
        test_probe.spin_until(lambda: test_probe.received["segmentation"], 60.0, "a segmentation")
        segmentation = test_probe.received["segmentation"][-1]
        assert list(segmentation.labels) == ["person", "bicycle", "traffic cone", "door handle"]
        assert image_to_array(segmentation.mask).max() <= 4

        results = set_parameters(test_probe, "zeroseg", queries="sky, building")
        assert results[0].successful, results[0].reason
        test_probe.spin_until(
            lambda: test_probe.received["labels"][-1].data == "sky, building", 30.0, "labels from the parameter"
        )
        test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=8)
        test_probe.spin_until(lambda: stamp_ns(test_probe.received["segmentation"][-1].header) == 8, 60.0, "frame 8")
        assert list(test_probe.received["segmentation"][-1].labels) == ["sky", "building"]
        assert "queries from queries parameter: 'sky, building'" in node.log()

        # Refused changes keep the node as it was and say why.
        blank = set_parameters(test_probe, "zeroseg", queries="  ,  ")[0]
        assert not blank.successful and blank.reason
        fixed = set_parameters(test_probe, "zeroseg", model="ViT-L-14")[0]
        assert not fixed.successful and "model" in fixed.reason
        out_of_range = set_parameters(test_probe, "zeroseg", probability_threshold=1.5)[0]
        assert not out_of_range.successful
        unknown_method = set_parameters(test_probe, "zeroseg", method="segformer")[0]
        assert not unknown_method.successful and "method must be one of" in unknown_method.reason
        threshold = set_parameters(test_probe, "zeroseg", probability_threshold=1.0)[0]
        assert threshold.successful, threshold.reason
        test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=9)
        test_probe.spin_until(lambda: stamp_ns(test_probe.received["mask"][-1].header) == 9, 60.0, "frame 9")
        # A probability threshold of 1 makes every pixel background.
        assert image_to_array(test_probe.received["mask"][-1]).max() == 0
        assert test_probe.received["labels"][-1].data == "sky, building"

        # Outputs switched off at run time stop being published; the mask always is.
        assert set_parameters(test_probe, "zeroseg", publish_overlay=False, publish_confidence=False)[0].successful
        overlays, confidences = len(test_probe.received["overlay"]), len(test_probe.received["confidence"])
        test_probe.publish_frame(make_frame(32, 40), "rgb8", stamp_ns=10)
        test_probe.spin_until(lambda: stamp_ns(test_probe.received["mask"][-1].header) == 10, 60.0, "frame 10")
        test_probe.spin_for(0.5)
        assert (len(test_probe.received["overlay"]), len(test_probe.received["confidence"])) == (overlays, confidences)
        assert node.alive()


@pytest.mark.timeout(180)
def test_compressed_images_are_segmented(tmp_path: Path) -> None:
    from ros_helpers import RELIABLE
    from sensor_msgs.msg import CompressedImage

    parameters = {**FAST_NODE_PARAMETERS, "queries": "ball, box", "use_compressed": True}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        publisher = test_probe.node.create_publisher(CompressedImage, "image/compressed", RELIABLE)
        test_probe.wait_for_node(node, subscribes_image=False)
        test_probe.spin_until(lambda: publisher.get_subscription_count() > 0, 10.0, "the compressed subscription")
        bgr = np.ascontiguousarray(make_frame(30, 50)[:, :, ::-1])
        msg = CompressedImage(format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
        msg.header.frame_id, msg.header.stamp.sec = "compressed_camera", 3
        publisher.publish(msg)
        test_probe.spin_until(lambda: test_probe.received["overlay"], 60.0, "outputs of a compressed frame")
        overlay, mask = test_probe.received["overlay"][-1], test_probe.received["mask"][-1]
        assert overlay.encoding == "bgr8" and (overlay.height, overlay.width) == (30, 50)
        assert (mask.height, mask.width) == (30, 50)
        assert mask.header.frame_id == "compressed_camera" and mask.header.stamp.sec == 3


# Another process publishes queries the way rclpy's and rclcpp's examples do: create_publisher(String, topic,
# 10), i.e. reliable, volatile, keep last 10. It waits until the node's subscription matched, publishes once
# and exits.
DEFAULT_QOS_PUBLISHER = """
import sys, time
import rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("default_qos_queries_publisher")
publisher = node.create_publisher(String, "queries", 10)
deadline = time.monotonic() + 30
while publisher.get_subscription_count() == 0:
    if time.monotonic() > deadline:
        sys.exit("the node's queries subscription never matched")
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(0.5)
publisher.publish(String(data=sys.argv[1]))
time.sleep(1.0)
node.destroy_node()
rclpy.try_shutdown()
print("published")
"""


@pytest.mark.timeout(180)
def test_queries_from_a_default_qos_publisher_in_another_process_reach_the_node(tmp_path: Path) -> None:
    from ros_helpers import run_python

    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "road, car"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: test_probe.received["labels"], 30.0, "labels of the queries parameter")
        assert test_probe.received["labels"][-1].data == "road, car"
        code = DEFAULT_QOS_PUBLISHER.replace("sys.argv[1]", repr("water, boat"))
        result = run_python(code, timeout=60.0)
        assert result.returncode == 0 and "published" in result.stdout, result.stdout
        test_probe.spin_until(
            lambda: test_probe.received["labels"][-1].data == "water, boat", 30.0, "labels of the published queries"
        )
        grey = np.ascontiguousarray(make_frame(32, 32)[:, :, 0])
        test_probe.publish_frame(grey, "mono8", stamp_ns=11)
        test_probe.spin_until(lambda: test_probe.received["segmentation"], 60.0, "a segmentation")
        test_probe.spin_until(lambda: test_probe.received["overlay"], 10.0, "an overlay")
        assert list(test_probe.received["segmentation"][-1].labels) == ["water", "boat"]
        assert test_probe.received["overlay"][-1].encoding == "rgb8"
        assert "offering incompatible" not in node.log().lower()


@pytest.mark.timeout(120)
def test_missing_weights_stop_the_node_with_a_clear_message(tmp_path: Path) -> None:
    parameters = {"model": "ViT-S-16", "checkpoint": str(tmp_path / "no-such-checkpoint.pt"), "device": "cpu"}
    with node_process(tmp_path, parameters) as node:
        node.process.wait(timeout=100)
        log = node.log()
    assert node.process.returncode == 2
    assert "cannot start: No weights for CLIP model 'ViT-S-16'" in log
    assert "no-such-checkpoint.pt" in log
    assert "Traceback" not in log


@pytest.mark.timeout(180)
def test_the_node_warms_up_for_the_given_sizes_before_the_first_frame_and_honours_onednn_false(tmp_path: Path) -> None:
    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "warmup_sizes": "64x48, 32x32", "onednn": "false"}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.spin_until(
            lambda: (
                test_probe.diagnostics().get("queries") == "cat, dog"
                and "warmed up for 32x32, 64x48 frames" in node.log()
            ),
            60.0,
            "the warm-up",
        )
        assert node.log().index("segmenting 2 labels") < node.log().index("warmed up")
        assert test_probe.diagnostics()["backend"] == "PyTorch fp32"  # onednn:=false keeps PyTorch's products
        test_probe.publish_frame(make_frame(48, 64), "rgb8", stamp_ns=1)
        test_probe.spin_until(lambda: len(test_probe.received["mask"]) == 1, 60.0, "a mask")


def test_a_bad_warmup_size_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "warmup_sizes": "640x480, 1280"}) as node:
        node.process.wait(timeout=100)
        log = node.log()
    assert node.process.returncode == 2
    assert "cannot start: warmup_sizes: frame size must look like 640x480 (width x height), got '1280'" in log
    assert "Traceback" not in log


@pytest.mark.timeout(240)
def test_an_exported_onnx_encoder_runs_in_the_node(tmp_path: Path) -> None:
    """image_encoder_engine: the node segments with ONNX Runtime and takes the engine's method."""
    import warnings

    from zeroseg_ros.core.config import ModelConfig
    from zeroseg_ros.engines.export import export_encoder, load_encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder, weights = load_encoder(ModelConfig(name="ViT-S-16", random_init=True, device="cpu"), "maskclip")
    engine = tmp_path / "encoder.onnx"
    export_encoder(encoder, engine, 64, 96, "ViT-S-16", weights)
    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "image_encoder_engine": str(engine)}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        test_probe.publish_frame(make_frame(48, 64), "rgb8", stamp_ns=7)
        test_probe.spin_until(lambda: test_probe.received["mask"], 90.0, "a mask from the ONNX encoder")
        mask = test_probe.received["mask"][0]
        assert (mask.height, mask.width, stamp_ns(mask.header)) == (48, 64, 7)
        assert image_to_array(mask).max() <= 2
        test_probe.spin_until(lambda: test_probe.diagnostics().get("method") == "maskclip", 10.0, "diagnostics")

        # The engine fixes the method: the parameter says so, and another method is refused up front.
        from rcl_interfaces.srv import GetParameters

        request = GetParameters.Request(names=["method"])
        assert test_probe.call(GetParameters, "/zeroseg/get_parameters", request).values[0].string_value == "maskclip"
        refused = set_parameters(test_probe, "zeroseg", method="naclip")[0]
        assert not refused.successful and "engine computes method 'maskclip'" in refused.reason
        # A query change in the same request is applied on its own.
        queries, method = set_parameters(test_probe, "zeroseg", queries="sky, tree, road", method="naclip")
        assert queries.successful and not method.successful
        test_probe.spin_until(
            lambda: test_probe.received["labels"][-1].data == "sky, tree, road", 30.0, "the queries of the batch"
        )
        # Later settings changes still work, and frames are still segmented.
        later = set_parameters(test_probe, "zeroseg", probability_threshold=1.0)[0]
        assert later.successful, later.reason
        test_probe.publish_frame(make_frame(48, 64), "rgb8", stamp_ns=8)
        test_probe.spin_until(lambda: stamp_ns(test_probe.received["mask"][-1].header) == 8, 90.0, "frame 8")
        test_probe.spin_until(
            lambda: stamp_ns(test_probe.received["confidence"][-1].header) == 8, 30.0, "frame 8's confidence"
        )
        # Threshold 1: a pixel keeps its label only where its probability is 1 (float32 saturates there).
        mask = image_to_array(test_probe.received["mask"][-1])
        confidence = image_to_array(test_probe.received["confidence"][-1])
        assert np.all((mask == 0) | (confidence >= 1.0))
        assert test_probe.diagnostics()["method"] == "maskclip"
        log = node.log()
    assert "exported with method 'maskclip'" in log and "encoder.onnx (64 x 96 input)" in log
    assert "could not be applied" not in log
