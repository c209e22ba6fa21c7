"""Start-up mistakes stop the node with exit code 2 and one clear paragraph (the parameter, the value, what is
allowed), never a traceback; an integer for a double parameter is accepted, as ROS users expect from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from ros_helpers import FAST_NODE_PARAMETERS, node_process, probe

pytestmark = pytest.mark.ros


def start_fails(tmp_path: Path, parameters: dict, ros_args: list[str]) -> str:
    """The log of a node that must exit with code 2; fails when it does not."""
    with node_process(tmp_path, parameters, ros_args=ros_args) as node:
        node.process.wait(timeout=100)
        log = node.log()
    assert node.process.returncode == 2, log
    assert "Traceback" not in log
    return log


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("ros_args", "message"),
    [
        (["-p", "short_side:=5000"], "cannot start: short_side must be at most 4096, got 5000"),
        (["-p", "short_side:=300.5"], "cannot start: short_side must be an integer, got 300.5 (number)"),
        (["-p", "method:=segformer"], "cannot start: method must be one of scclip, naclip"),
        (["-p", "reliable:=yes please"], "cannot start: reliable must be a boolean (true/false), got 'yes please'"),
    ],
)
def test_a_bad_value_on_the_command_line_stops_the_node_with_a_clear_message(
    tmp_path: Path, ros_args: list[str], message: str
) -> None:
    name = ros_args[1].split(":=")[0]
    # rcl lets the params file win over -p for the same name: keep the name out of the file.
    parameters = {key: value for key, value in FAST_NODE_PARAMETERS.items() if key != name}
    log = start_fails(tmp_path, parameters, ros_args)
    assert message in log


@pytest.mark.timeout(120)
def test_a_missing_params_file_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-params.yaml"
    log = start_fails(tmp_path, FAST_NODE_PARAMETERS, ["--params-file", str(missing)])
    assert f"cannot start: params file {missing} does not exist (--params-file)" in log


@pytest.mark.timeout(120)
def test_a_bad_value_in_the_params_file_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    log = start_fails(tmp_path, {**FAST_NODE_PARAMETERS, "probability_threshold": 1.5}, [])
    assert "cannot start: probability_threshold must be at most 1.0, got 1.5" in log


@pytest.mark.timeout(180)
def test_an_integer_for_a_double_parameter_in_the_params_file_is_accepted(tmp_path: Path) -> None:
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters

    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "probability_threshold": 1, "max_rate": 30}
    with node_process(tmp_path, parameters) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        request = GetParameters.Request(names=["probability_threshold", "max_rate"])
        values = test_probe.call(GetParameters, "/zeroseg/get_parameters", request).values
        assert [(v.type, v.double_value) for v in values] == [
            (ParameterType.PARAMETER_DOUBLE, 1.0),
            (ParameterType.PARAMETER_DOUBLE, 30.0),
        ]
        assert node.alive()


@pytest.mark.timeout(120)
def test_a_params_file_that_is_not_valid_yaml_stops_the_node_with_a_clear_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters: [short_side: \n")
    log = start_fails(tmp_path, FAST_NODE_PARAMETERS, ["--params-file", str(broken)])
    assert "cannot start: the ROS arguments could not be read" in log and "broken.yaml" in log
