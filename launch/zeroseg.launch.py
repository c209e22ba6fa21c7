"""Launch the zeroseg node (and optionally RViz) on a camera topic.

    ros2 launch zeroseg_ros zeroseg.launch.py image:=/camera/image_raw queries:="person, traffic cone"

Arguments: image (camera topic), queries (overrides the parameters file when not empty), params_file,
namespace (where the node's topics live: <namespace>/mask, /overlay, ...), use_compressed (subscribe to
<image>/compressed), rviz (open config/zeroseg.rviz with the input, overlay and mask). Works on Humble, Jazzy
and Kilted.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "zeroseg_ros"
NODE_EXECUTABLE = "zeroseg_node"
NODE_NAME = "zeroseg"


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _launch_setup(context: LaunchContext) -> list:
    image = LaunchConfiguration("image").perform(context)
    queries = LaunchConfiguration("queries").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    use_compressed = _is_true(LaunchConfiguration("use_compressed").perform(context))
    parameters: list = [LaunchConfiguration("params_file").perform(context), {"use_compressed": use_compressed}]
    if queries.strip():
        parameters.append({"queries": queries})
    prefix = f"/{namespace}" if namespace else ""

    actions = [
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
    ]
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
            OpaqueFunction(function=_launch_setup),
        ]
    )
