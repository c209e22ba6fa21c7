"""The node's services from another process, as a client would call them: set_queries, enable, the lifecycle
services (ChangeState, GetState), and set_parameters requests no client should be able to kill it with."""

from __future__ import annotations

from pathlib import Path

import pytest
from ros_helpers import FAST_NODE_PARAMETERS, make_frame, node_process, probe, stamp_ns

pytestmark = pytest.mark.ros


def set_queries(test_probe, text: str):
    from zeroseg_ros.srv import SetQueries

    return test_probe.call(SetQueries, "/set_queries", SetQueries.Request(queries=text), timeout=120.0)


def enable(test_probe, on: bool):
    from std_srvs.srv import SetBool

    return test_probe.call(SetBool, "/enable", SetBool.Request(data=on))


def lifecycle_state(test_probe) -> str:
    from lifecycle_msgs.srv import GetState

    return test_probe.call(GetState, "/zeroseg/get_state", GetState.Request()).current_state.label


def change_state(test_probe, transition_id: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition_id))
    return test_probe.call(ChangeState, "/zeroseg/change_state", request, timeout=120.0).success


def answers_a_frame(test_probe, stamp: int, timeout: float) -> bool:
    """Publishes a frame stamped ``stamp``; whether a mask with that stamp comes back within ``timeout``."""
    test_probe.publish_frame(make_frame(32, 40, seed=stamp), "rgb8", stamp_ns=stamp)
    try:
        test_probe.spin_until(
            lambda: any(stamp_ns(m.header) == stamp for m in test_probe.received["mask"]), timeout, f"frame {stamp}"
        )
    except AssertionError:
        return False
    return True


@pytest.mark.timeout(240)
def test_set_queries_answers_once_the_queries_are_in_use_or_refuses_with_the_reason(tmp_path: Path) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "road, car"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        response = set_queries(test_probe, "person|pedestrian, traffic cone")
        assert response.success, response.message
        assert list(response.labels) == ["person", "traffic cone"]
        # In use when answered: the next frame is segmented with them.
        assert answers_a_frame(test_probe, 5, 60.0)
        test_probe.spin_until(lambda: test_probe.received["segmentation"], 10.0, "the segmentation")
        assert list(test_probe.received["segmentation"][-1].labels) == ["person", "traffic cone"]

        blank = set_queries(test_probe, " , ")
        assert not blank.success and blank.message
        assert list(blank.labels) == ["person", "traffic cone"]  # the previous queries stay
        too_many = set_queries(test_probe, ", ".join(f"thing {i}" for i in range(300)))
        assert not too_many.success and "max_queries" in too_many.message

        # The topic and the parameter keep working next to the service.
        test_probe.publish_queries("sky, tree")
        test_probe.spin_until(lambda: test_probe.received["labels"][-1].data == "sky, tree", 30.0, "topic queries")
        test_probe.spin_until(lambda: test_probe.diagnostics().get("queries") == "sky, tree", 10.0, "diagnostics")
        assert node.alive()


@pytest.mark.timeout(240)
def test_enable_false_unsubscribes_the_camera_and_depth_and_true_subscribes_again(tmp_path: Path) -> None:
    from ros_helpers import SENSOR
    from sensor_msgs.msg import Image

    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "use_depth": True}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        depth_pub = test_probe.node.create_publisher(Image, "depth", SENSOR)
        test_probe.wait_for_node(node)
        test_probe.spin_until(lambda: depth_pub.get_subscription_count() == 1, 10.0, "the depth subscription")
        assert answers_a_frame(test_probe, 1, 60.0)

        off = enable(test_probe, False)
        assert off.success and "disabled" in off.message
        test_probe.spin_until(lambda: test_probe.image_pub.get_subscription_count() == 0, 10.0, "no subscription")
        test_probe.spin_until(lambda: depth_pub.get_subscription_count() == 0, 10.0, "no depth subscription")
        test_probe.spin_until(lambda: test_probe.diagnostics().get("enabled") == "false", 10.0, "enabled false")
        assert not answers_a_frame(test_probe, 2, 3.0)

        on = enable(test_probe, True)
        assert on.success and "enabled" in on.message
        test_probe.spin_until(lambda: test_probe.image_pub.get_subscription_count() == 1, 10.0, "the subscription")
        test_probe.spin_until(lambda: depth_pub.get_subscription_count() == 1, 10.0, "the depth subscription again")
        test_probe.spin_until(lambda: test_probe.diagnostics().get("enabled") == "true", 10.0, "enabled true")
        test_probe.spin_for(0.3)
        assert answers_a_frame(test_probe, 3, 60.0)
        assert node.alive()


@pytest.mark.timeout(300)
def test_every_lifecycle_transition_through_the_lifecycle_services(tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "autostart": False}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.spin_until(lambda: bool(test_probe.diagnostics()) or not node.alive(), 90.0, "diagnostics")
        assert lifecycle_state(test_probe) == "unconfigured"
        assert test_probe.diagnostics()["lifecycle_state"] == "unconfigured"
        assert "model" not in test_probe.diagnostics()  # nothing loaded yet
        assert test_probe.image_pub.get_subscription_count() == 0

        assert change_state(test_probe, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(test_probe) == "inactive"
        test_probe.spin_until(lambda: test_probe.diagnostics().get("model") == "ViT-S-16", 10.0, "model loaded")
        assert test_probe.image_pub.get_subscription_count() == 0  # inactive: no camera, no output
        assert not answers_a_frame(test_probe, 1, 2.0)

        assert change_state(test_probe, Transition.TRANSITION_ACTIVATE)
        assert lifecycle_state(test_probe) == "active"
        test_probe.spin_until(lambda: test_probe.image_pub.get_subscription_count() == 1, 10.0, "the subscription")
        test_probe.spin_until(lambda: test_probe.received["labels"], 30.0, "the labels, latched on activate")
        assert test_probe.received["labels"][-1].data == "cat, dog"
        test_probe.spin_for(0.3)
        assert answers_a_frame(test_probe, 2, 60.0)

        assert change_state(test_probe, Transition.TRANSITION_DEACTIVATE)
        assert lifecycle_state(test_probe) == "inactive"
        test_probe.spin_until(lambda: test_probe.image_pub.get_subscription_count() == 0, 10.0, "no subscription")
        assert not answers_a_frame(test_probe, 3, 2.0)

        assert change_state(test_probe, Transition.TRANSITION_CLEANUP)
        assert lifecycle_state(test_probe) == "unconfigured"
        test_probe.spin_until(lambda: "model" not in test_probe.diagnostics(), 10.0, "the model freed")

        # Configured again: the queries are kept, frames are answered once active.
        assert change_state(test_probe, Transition.TRANSITION_CONFIGURE)
        assert change_state(test_probe, Transition.TRANSITION_ACTIVATE)
        test_probe.spin_until(lambda: test_probe.image_pub.get_subscription_count() == 1, 10.0, "the subscription")
        test_probe.spin_for(0.3)
        assert answers_a_frame(test_probe, 4, 60.0)
        assert {stamp_ns(m.header) for m in test_probe.received["mask"]} == {2, 4}

        assert change_state(test_probe, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lifecycle_state(test_probe) == "finalized"
        assert node.alive()


@pytest.mark.timeout(180)
def test_bad_set_parameters_requests_are_refused_and_the_node_goes_on(tmp_path: Path) -> None:
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import ListParameters, SetParameters, SetParametersAtomically

    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "cat, dog"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        bogus = ParameterMsg(name="probability_threshold", value=ParameterValue(type=42))
        for _ in range(2):
            request = SetParameters.Request(parameters=[bogus])
            response = test_probe.call(SetParameters, "/zeroseg/set_parameters", request)
            assert len(response.results) == 1 and not response.results[0].successful
            assert "type 42" in response.results[0].reason
        atomically = test_probe.call(
            SetParametersAtomically,
            "/zeroseg/set_parameters_atomically",
            SetParametersAtomically.Request(parameters=[bogus]),
        )
        assert not atomically.result.successful and "type 42" in atomically.result.reason
        assert node.alive()
        assert node.log().count("refused a set_parameters request") == 1  # logged once

        unnamed = ParameterMsg(name="", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=3))
        result = test_probe.call(SetParameters, "/zeroseg/set_parameters", SetParameters.Request(parameters=[unnamed]))
        assert not result.results[0].successful and "empty" in result.results[0].reason
        names = test_probe.call(ListParameters, "/zeroseg/list_parameters", ListParameters.Request()).result.names
        assert "" not in names and "probability_threshold" in names

        # The node still takes good requests and frames.
        double = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.0)
        good = ParameterMsg(name="probability_threshold", value=double)
        response = test_probe.call(SetParameters, "/zeroseg/set_parameters", SetParameters.Request(parameters=[good]))
        assert response.results[0].successful, response.results[0].reason
        assert answers_a_frame(test_probe, 9, 60.0)
        assert node.alive()


@pytest.mark.timeout(400)
def test_the_node_keeps_working_while_set_queries_waits_for_the_text_encoder(tmp_path: Path) -> None:
    import time

    from zeroseg_ros.srv import SetQueries

    words = ["cat", "dog", "tree", "car", "road", "sky", "door", "chair"]
    # 80 prompt templates per query. How long the encoding takes depends on the CPU: the queries grow (8, 32, then
    # 128; new ones each time) until one change takes long enough for diagnostics to be due while it waits.
    parameters = {**FAST_NODE_PARAMETERS, "templates": "imagenet80"}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        client = test_probe.node.create_client(SetQueries, "/set_queries")
        assert client.wait_for_service(timeout_sec=10.0)
        for copies in (1, 4, 16):
            queries = ", ".join(f"{word} {copies}-{copy}" for copy in range(copies) for word in words)
            diagnostics_before = len(test_probe.received["diagnostics"])
            sent = time.monotonic()
            future = client.call_async(SetQueries.Request(queries=queries))
            arrivals: list[float] = []
            while not future.done():
                assert time.monotonic() - sent < 180.0, "no answer from set_queries"
                test_probe.executor.spin_once(timeout_sec=0.05)
                new = len(test_probe.received["diagnostics"]) - diagnostics_before - len(arrivals)
                arrivals += [time.monotonic()] * new
            answered = time.monotonic()
            assert future.result().success and ", ".join(future.result().labels) == queries
            if answered - sent > 1.5:
                break
        else:
            pytest.fail(f"128 queries took {answered - sent:.1f} s: too fast for this test to mean anything")
        # The diagnostics timer (period 0.5 s) kept firing while the service waited: the executor was free.
        during = [t for t in arrivals if t < answered]
        assert len(during) >= 2, f"{len(during)} diagnostics during {answered - sent:.1f} s of set_queries"
        assert node.alive()
