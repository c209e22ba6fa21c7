"""Files and environment for the ROS processes this package starts (``zeroseg run``, ``zeroseg bench --ros``).

No rclpy here: the environment has to be settled before a child process creates its DDS participant.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PACKAGE = "zeroseg_ros"
# Fast DDS 3 (Kilted on) reads the first and warns that the second is deprecated; Fast DDS 2 (Humble, Jazzy)
# reads the second.
FASTDDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS_2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")
LARGE_FRAMES_PROFILE = "fastdds_large_frames.xml"


def config_file(name: str) -> Path:
    """``config/<name>`` of this checkout, else of the installed ROS package (the launch file's copy)."""
    checkout = Path(__file__).resolve().parents[2] / "config" / name
    if checkout.is_file():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config" / name
    except (ImportError, LookupError):
        return checkout


def uses_fastdds(env: Mapping[str, str]) -> bool:
    """Whether ROS processes started with ``env`` use Fast DDS (ROS 2's default middleware)."""
    return env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def fastdds_environment(env: Mapping[str, str], profile: str | None = None) -> dict[str, str]:
    """``env`` with the Fast DDS profile file that ROS processes started with it should load.

    ``profile``: None for config/fastdds_large_frames.xml unless the user already exported a profile (theirs
    wins; nothing is set for another middleware); a file path to use that one; ``none`` for Fast DDS's own
    defaults, which lose every best-effort frame over 512 KiB on one host (docs/benchmarks.md). The variable
    follows ``ROS_DISTRO``: both names up to Jazzy, the new one alone from Kilted on (and when it is unset).
    """
    result = dict(env)
    if profile == "none":
        return {name: value for name, value in result.items() if name not in FASTDDS_PROFILE_VARIABLES}
    if profile is None:
        if not uses_fastdds(result) or any(result.get(v) for v in FASTDDS_PROFILE_VARIABLES):
            return result
        profile = str(config_file(LARGE_FRAMES_PROFILE))
    fastdds_2 = result.get("ROS_DISTRO") in FASTDDS_2_DISTROS
    for variable in FASTDDS_PROFILE_VARIABLES if fastdds_2 else FASTDDS_PROFILE_VARIABLES[:1]:
        result[variable] = profile
    return result
