"""A settings change the inference thread could not apply is rolled back: the node's parameters are set back to
the settings the segmenter kept (in process, real rclpy; the failure is reported as the worker reports it)."""

from __future__ import annotations

import time

import pytest
from ros_helpers import FAST_NODE_PARAMETERS

pytestmark = pytest.mark.ros


@pytest.mark.timeout(120)
def test_a_settings_change_the_worker_could_not_apply_is_set_back() -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from zeroseg_ros.ros.node import ZerosegNode

    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter(name, value=value) for name, value in FAST_NODE_PARAMETERS.items()]
    node = ZerosegNode(context=context, parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.segmenter is not None and node.segmenter.config.short_side == 64
        # The change is accepted by the parameter callback; then the worker reports that it could not apply it.
        change = [Parameter("short_side", value=96), Parameter("pamr", value=True)]
        assert node.set_parameters_atomically(change).successful  # one change for the worker
        deadline = time.monotonic() + 30
        while (node.segmenter.config.short_side, node.segmenter.config.pamr) != (96, True):
            assert time.monotonic() < deadline, "the worker did not apply the change"
            executor.spin_once(timeout_sec=0.05)
        node.segmenter.update_config(short_side=64, pamr=False)  # as if the worker had kept the old settings
        node.config_failed({"short_side": 96, "pamr": True}, "ConfigError: refused")

        deadline = time.monotonic() + 10
        while node.get_parameter("short_side").value != 64 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert node.get_parameter("short_side").value == 64
        assert node.get_parameter("pamr").value is False
        assert node._values["short_side"] == 64 and node._values["pamr"] is False
        assert "not applied" in node.statistics.counts().last_rejection
        # Later changes apply again.
        assert node.set_parameters([Parameter("short_side", value=128)])[0].successful
        deadline = time.monotonic() + 30
        while node.segmenter.config.short_side != 128 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert node.segmenter.config.short_side == 128
    finally:
        node.stop()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
