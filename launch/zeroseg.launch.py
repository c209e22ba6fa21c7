"""Launch the zeroseg node (and optionally RViz) on a camera topic.

    ros2 launch zeroseg_ros zeroseg.launch.py image:=/camera/image_raw queries:="person, traffic cone"
    ros2 launch zeroseg_ros zeroseg.launch.py cameras:=front,left images:=/cam_front/image_raw,/cam_left/image_raw

Arguments: image (camera topic), depth and camera_info (with use_depth:=true: the registered depth image and
the colour camera's info; camera_info defaults to the one beside image), params_file, namespace (where the
node's topics live: <namespace>/mask, /overlay, ...), rviz (open config/zeroseg.rviz with the input, colour
mask and overlay; with cameras, the first camera's), images (with the cameras parameter: one image topic per
camera, comma separated, in the cameras' order; camera C's C/image, C/image/compressed and C/camera_info are
remapped to it and beside it), fastdds_profile (the Fast DDS profile of the processes launched here:
config/fastdds_large_frames.xml unless one is exported; a file; or none), and the node parameters of
NODE_PARAMETER_ARGUMENTS (queries, model, device, short_side, reliable, use_compressed, ...). A node parameter
argument left empty (the default) is not passed at all, so params_file decides it. Works on Humble, Jazzy and Kilted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.ros.params import PARAMETERS, ParamValue, parse_camera_names
from zeroseg_ros.ros.transport import FASTDDS_PROFILE_VARIABLES, fastdds_environment

PACKAGE = "zeroseg_ros"
NODE_EXECUTABLE = "zeroseg_node"
NODE_NAME = "zeroseg"
# Node parameters that are launch arguments too (`name:=value`). Empty (the default) means "not given": the
# parameter is then not passed, and params_file (or the node's own default) decides it.
NODE_PARAMETER_ARGUMENTS = (
    "queries",
    "model",
    "pretrained",
    "checkpoint",
    "cache_dir",
    "random_weights",
    "image_encoder_engine",
    "device",
    "precision",
    "onednn",
    "method",
    "short_side",
    "probability_threshold",
    "max_rate",
    "reliable",
    "use_compressed",
    "cameras",
    "max_batch",
    "quick_gelu",
    "use_depth",
    "publish_mask_compressed",
    "publish_overlay_compressed",
)
# RViz shows these fixed topics (config/zeroseg.rviz); the launch file remaps them to the real ones. The input
# display subscribes through image_transport, which picks the transport from the topic's last name:
# ".../compressed" is the compressed transport of the base topic (rviz_default_plugins
# get_transport_from_topic.cpp, the same in humble 9b354826, jazzy 591594ee and rolling f7112b1a of ros2/rviz).
RVIZ_INPUT_TOPIC = "/zeroseg_rviz/input"
RVIZ_INPUT_COMPRESSED_TOPIC = "/zeroseg_rviz/input/compressed"
RVIZ_OVERLAY_TOPIC = "/zeroseg_rviz/overlay"
RVIZ_MASK_COLOR_TOPIC = "/zeroseg_rviz/mask_color"
RVIZ_CONFIG_RAW = "zeroseg.rviz"
RVIZ_CONFIG_COMPRESSED = "zeroseg_compressed.rviz"

_SPECS = {spec.name: spec for spec in PARAMETERS}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class LaunchArgumentError(ValueError):
    """A launch argument whose value the node could not take (raised before anything starts)."""


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LaunchArgumentError(f"launch argument {name}:={text!r} is not a boolean (true or false)")


def parameter_value(name: str, text: str) -> ParamValue:
    """The typed value of node parameter ``name`` given as launch argument text (a ROS parameter's type must
    match its declaration: short_side:=224 is an integer, not the string "224")."""
    default = _SPECS[name].default
    if isinstance(default, bool):
        return parse_bool(name, text)
    try:
        if isinstance(default, int):
            return int(text.strip())
        if isinstance(default, float):
            return float(text.strip())
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise LaunchArgumentError(f"launch argument {name}:={text!r} is not {kind}") from None
    return text


def node_parameter_overrides(arguments: Mapping[str, str]) -> dict[str, ParamValue]:
    """The node parameters given as launch arguments: only those not left empty, typed."""
    return {
        name: parameter_value(name, arguments[name])
        for name in NODE_PARAMETER_ARGUMENTS
        if arguments.get(name, "").strip()
    }


def params_file_value(params_file: str, name: str) -> object:
    """``name``'s value in a ROS parameters file (any node entry), None when the file does not set it."""
    try:
        content = yaml.safe_load(Path(params_file).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(content, dict):
        return None
    for entry in content.values():
        parameters = entry.get("ros__parameters") if isinstance(entry, dict) else None
        if isinstance(parameters, dict) and name in parameters:
            return parameters[name]
    return None


def beside(image: str, name: str) -> str:
    """image_transport's convention: a topic beside the image (/camera/image_raw -> /camera/camera_info)."""
    return f"{image.rsplit('/', 1)[0]}/{name}"


def camera_remappings(cameras_text: str, images_text: str) -> list[tuple[str, str]]:
    """Each camera's C/image, C/image/compressed and C/camera_info remapped to its topic in ``images_text`` (one
    per camera, in the cameras' order) and beside it; none when no images are given."""
    try:
        cameras = parse_camera_names(cameras_text)
    except ConfigError as error:
        raise LaunchArgumentError(f"launch argument cameras:={cameras_text!r}: {error}") from None
    images = [image.strip() for image in images_text.split(",") if image.strip()]
    if not images:
        return []
    if len(images) != len(cameras):
        raise LaunchArgumentError(
            f"launch argument images:={images_text!r} names {len(images)} topics for {len(cameras)} cameras "
            f"({', '.join(cameras) or 'none'}): give one image topic per camera, in the same order"
        )
    remappings = []
    for camera, image in zip(cameras, images, strict=True):
        remappings += [
            (f"{camera}/image", image),
            (f"{camera}/image/compressed", f"{image}/compressed"),
            (f"{camera}/camera_info", beside(image, "camera_info")),
        ]
    return remappings


def fastdds_profile_env(environment: Mapping[str, str], profile: str) -> dict[str, str]:
    """The Fast DDS variables to add to the environment of the processes launched here.

    ``profile``: '' for config/fastdds_large_frames.xml unless a profile is exported in ``environment`` (the
    launch context's: an including launch file's SetEnvironmentVariable counts) or the middleware is not Fast
    DDS; a file to use that one; 'none' for nothing at all (Fast DDS's defaults, or the profile you exported:
    it is never removed). Without the large-frames profile Fast DDS loses every best-effort image over 512 KiB
    between processes on one host (README "Image transport").
    """
    if profile == "none":
        return {}
    wanted = fastdds_environment(environment, profile or None)
    return {
        variable: wanted[variable]
        for variable in FASTDDS_PROFILE_VARIABLES
        if variable in wanted and wanted[variable] != environment.get(variable)
    }


def _launch_setup(context: LaunchContext) -> list:
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    image = argument("image")
    camera_info = argument("camera_info").strip() or beside(image, "camera_info")
    namespace = argument("namespace").strip("/")
    params_file = argument("params_file")
    overrides = node_parameter_overrides({name: argument(name) for name in NODE_PARAMETER_ARGUMENTS})
    cameras = str(overrides.get("cameras", params_file_value(params_file, "cameras") or ""))
    per_camera = camera_remappings(cameras, argument("images"))
    # Later entries override earlier ones (launch_ros Node's `parameters`: "the last definition of a parameter
    # takes effect"; launch_ros actions/node.py, f9ab9371). The node's name is fully qualified here
    # (namespace and name given), so launch_ros writes the dict under /<namespace>/zeroseg, which also wins
    # over the params file's /**/zeroseg wildcard entry.
    parameters: list = [params_file]
    if overrides:
        parameters.append(overrides)
    # Scoped to the processes started here (ExecuteProcess/Node additional_env, launch descriptions/
    # executable.py, 02595baf): the Fast DDS variables do not leak into a launch file that includes this one.
    environment = fastdds_profile_env(context.environment, argument("fastdds_profile").strip())
    prefix = f"/{namespace}" if namespace else ""

    actions: list = [
        Node(
            package=PACKAGE,
            executable=NODE_EXECUTABLE,
            name=NODE_NAME,
            namespace=namespace,
            parameters=parameters,
            remappings=[
                ("image", image),
                ("image/compressed", f"{image}/compressed"),
                ("depth", argument("depth")),
                ("camera_info", camera_info),
                *per_camera,
            ],
            additional_env=environment,
            output="screen",
            emulate_tty=True,
        )
    ]
    if parse_bool("rviz", argument("rviz")):
        # With cameras RViz shows the first one: its input topic and its outputs under its name.
        first = next(iter(parse_camera_names(cameras)), "")
        shown = dict(per_camera).get(f"{first}/image", f"{prefix}/{first}/image") if first else image
        outputs = f"{prefix}/{first}" if first else prefix
        use_compressed = overrides.get("use_compressed", params_file_value(params_file, "use_compressed"))
        rviz_config = RVIZ_CONFIG_COMPRESSED if use_compressed is True else RVIZ_CONFIG_RAW
        # The RViz files show fixed placeholder topics; remapping them follows the image and namespace arguments.
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="zeroseg_rviz",
                arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", rviz_config])],
                remappings=[
                    (RVIZ_INPUT_TOPIC, shown),
                    (RVIZ_INPUT_COMPRESSED_TOPIC, f"{shown}/compressed"),
                    (RVIZ_OVERLAY_TOPIC, f"{outputs}/overlay"),
                    (RVIZ_MASK_COLOR_TOPIC, f"{outputs}/mask_color"),
                ],
                additional_env=environment,
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    node_parameters = [
        DeclareLaunchArgument(
            name,
            default_value="",
            description=f"node parameter {name} (empty: from params_file). {_SPECS[name].description}",
        )
        for name in NODE_PARAMETER_ARGUMENTS
    ]
    return LaunchDescription(
        [
            DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
            DeclareLaunchArgument(
                "depth",
                default_value="/camera/depth/image_raw",
                description="depth image registered to the colour camera (read with use_depth:=true)",
            ),
            DeclareLaunchArgument(
                "camera_info",
                default_value="",
                description="the colour camera's CameraInfo (use_depth:=true); empty: camera_info beside image",
            ),
            DeclareLaunchArgument(
                "images",
                default_value="",
                description="with cameras: one image topic per camera, comma separated, in the cameras' order "
                "(C/image, C/image/compressed and C/camera_info are remapped to it and beside it); empty: C/image "
                "in the namespace",
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
                "rviz", default_value="false", description="open RViz with the input, colour mask and overlay"
            ),
            DeclareLaunchArgument(
                "fastdds_profile",
                default_value="",
                description="Fast DDS profile of the launched processes: empty = config/fastdds_large_frames.xml "
                "unless FASTDDS_/FASTRTPS_DEFAULT_PROFILES_FILE is exported; a file; or none (add nothing)",
            ),
            *node_parameters,
            OpaqueFunction(function=_launch_setup),
        ]
    )
