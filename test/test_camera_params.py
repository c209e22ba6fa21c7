"""The cameras parameter (ros/params.py): names split and checked before the node starts."""

from __future__ import annotations

import pytest

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.ros.params import PARAMETERS_BY_NAME, check_value, parse_camera_names


def test_camera_names_are_split_and_stripped() -> None:
    assert parse_camera_names("") == ()
    assert parse_camera_names("  ") == ()
    assert parse_camera_names(" front, left ,car/rear_2") == ("front", "left", "car/rear_2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("front,,left", "must not be empty"),
        ("front, ", "must not be empty"),
        ("front, left, front", "front is given more than once"),
        ("2front", "not a relative ROS name"),
        ("/front", "not a relative ROS name"),
        ("front/", "not a relative ROS name"),
        ("front left", "not a relative ROS name"),
        ("front-left", "not a relative ROS name"),
        ("a__b", "not a relative ROS name"),
        ("car//front", "not a relative ROS name"),
    ],
)
def test_bad_camera_names_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_camera_names(text)
    reason = check_value(PARAMETERS_BY_NAME["cameras"], text)
    assert reason is not None and reason.startswith("cameras: ")
