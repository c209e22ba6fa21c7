"""The environment given to the ROS processes this package starts: the Fast DDS profile for large frames is
added unless the user exported one, can be replaced or removed, and is never forced on another middleware."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from zeroseg_ros.ros.transport import FASTDDS_PROFILE_VARIABLES, LARGE_FRAMES_PROFILE, config_file, fastdds_environment

SHIPPED = str(config_file(LARGE_FRAMES_PROFILE))


def test_shipped_profile_gives_shared_memory_room_for_two_1080p_frames() -> None:
    root = ElementTree.parse(SHIPPED).getroot()
    namespace = root.tag.partition("}")[0] + "}"
    (shm,) = [d for d in root.iter(f"{namespace}transport_descriptor") if d.findtext(f"{namespace}type") == "SHM"]
    assert int(shm.findtext(f"{namespace}segment_size")) >= 2 * 1920 * 1080 * 3
    participant = root.find(f".//{namespace}participant")
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iter(f"{namespace}transport_id")]
    declared = [d.findtext(f"{namespace}transport_id") for d in root.iter(f"{namespace}transport_descriptor")]
    assert used == declared  # shared memory on one host, UDPv4 to other hosts
    assert participant.findtext(f".//{namespace}useBuiltinTransports") == "false"


def test_profile_is_added_for_fast_dds_by_default() -> None:
    for env in ({}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}):
        result = fastdds_environment({**env, "PATH": "/bin"})
        assert result["FASTDDS_DEFAULT_PROFILES_FILE"] == SHIPPED
        assert result["PATH"] == "/bin"


def test_profile_variable_follows_the_distro_s_fast_dds() -> None:
    # Fast DDS 3 warns that the old name is deprecated: Kilted and later get the new name alone.
    for distro in ("kilted", "rolling"):
        assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in fastdds_environment({"ROS_DISTRO": distro})
    for distro in ("humble", "jazzy"):  # Fast DDS 2 reads the old name
        result = fastdds_environment({"ROS_DISTRO": distro})
        assert [result[variable] for variable in FASTDDS_PROFILE_VARIABLES] == [SHIPPED, SHIPPED]


def test_a_profile_the_user_exported_wins() -> None:
    for variable in FASTDDS_PROFILE_VARIABLES:
        env = {variable: "/etc/robot/dds.xml"}
        assert fastdds_environment(env) == env


def test_no_profile_for_another_middleware() -> None:
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert fastdds_environment(env) == env


def test_an_explicit_profile_replaces_and_none_removes() -> None:
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml", "HOME": "/root"}
    replaced = fastdds_environment({**env, "ROS_DISTRO": "jazzy"}, "/tmp/mine.xml")
    assert [replaced[v] for v in FASTDDS_PROFILE_VARIABLES] == ["/tmp/mine.xml", "/tmp/mine.xml"]
    assert fastdds_environment(env, "none") == {"HOME": "/root"}
