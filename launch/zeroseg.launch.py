"""Launch the zeroseg node (and optionally RViz) on a camera topic.

    ros2 launch zeroseg_ros zeroseg.launch.py image:=/camera/image_raw queries:="person, traffic cone"

Arguments: image (camera topic), queries (overrides the parameters file when not empty), params_file,
namespace (where the node's topics live: <namespace>/mask, /overlay, ...), use_compressed (subscribe to
<image>/compressed), rviz (open config/zeroseg.rviz with the input, overlay and mask), fastdds_profile (the
Fast DDS profile of the processes launched here: config/fastdds_large_frames.xml unless one is exported; a
file; or none). Works on Humble, Jazzy and Kilted.
"""

import os

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, UnsetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from zeroseg_ros.ros.transport import FASTDDS_PROFILE_VARIABLES, fastdds_environment

PACKAGE = "zeroseg_ros"
NODE_EXECUTABLE = "zeroseg_node"
NODE_NAME = "zeroseg"


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _transport_actions(profile: str) -> list:
    """Environment actions that give the processes launched after them the Fast DDS profile for large frames
    (without it, Fast DDS loses every best-effort image over 512 KiB between processes on one host)."""
    environment = fastdds_environment(os.environ, profile or None)
    actions: list = []
    for variable in FASTDDS_PROFILE_VARIABLES:
        if variable not in environment:
            actions.append(UnsetEnvironmentVariable(variable))
        elif environment[variable] != os.environ.get(variable):
            actions.append(SetEnvironmentVariable(variable, environment[variable]))
    return actions


def _launch_setup(context: LaunchContext) -> list:
    image = LaunchConfiguration("image").perform(context)
    queries = LaunchConfiguration("queries").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    use_compressed = _is_true(LaunchConfiguration("use_compressed").perform(context))
    parameters: list = [LaunchConfiguration("params_file").perform(context), {"use_compressed": use_compressed}]
    if queries.strip():
        parameters.append({"queries": queries})
    prefix = f"/{namespace}" if namespace else ""

    actions = _transport_actions(LaunchConfiguration("fastdds_profile").perform(context).strip())
    actions.append(
        Node(
            package=PACKAGE,
            executable=NODE_EXECUTABLE,
            name=NODE_NAME,
            namespace=namespace,
            parameters=parameters,
            remappings=[("image", image), ("image/compressed", f"{image}/compressed")],
            output="screen",
            emulate_tty=True,
        )
    )
    if _is_true(LaunchConfiguration("rviz").perform(context)):
        # The RViz file shows fixed placeholder topics; remapping them follows the image and namespace arguments.
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="zeroseg_rviz",
                arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "zeroseg.rviz"])],
                remappings=[
                    ("/zeroseg_rviz/input", image),
                    ("/zeroseg_rviz/overlay", f"{prefix}/overlay"),
                    ("/zeroseg_rviz/mask", f"{prefix}/mask"),
                ],
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
            DeclareLaunchArgument(
                "queries",
                default_value="",
                description='labels, e.g. "person|pedestrian, traffic cone" (empty: from params_file or the '
                "queries topic)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "zeroseg.yaml"]),
                description="node parameters (every parameter with its default: config/zeroseg.yaml)",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="zeroseg", description="namespace of the node and its topics"
            ),
            DeclareLaunchArgument(
                "use_compressed", default_value="false", description="subscribe to <image>/compressed (jpeg/png)"
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="open RViz with input, overlay, mask"),
            DeclareLaunchArgument(
                "fastdds_profile",
                default_value="",
                description="Fast DDS profile of the launched processes: empty = config/fastdds_large_frames.xml "
                "unless FASTDDS_/FASTRTPS_DEFAULT_PROFILES_FILE is exported; a file; or none (Fast DDS defaults)",
            ),
            OpaqueFunction(function=_launch_setup),
        ]
    )
