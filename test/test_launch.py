"""launch/zeroseg.launch.py names what the package installs: its executable, parameters file, RViz files and
the topics the node really subscribes to; its node parameter arguments are typed and passed only when given;
its Fast DDS settings reach only the processes it starts. Checked from the source (ast) and by running its
functions with stand-ins for ROS 2 ``launch`` everywhere, and with the real ``launch`` where it is importable."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeroseg_ros.ros.params import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "zeroseg.launch.py"
# Launch arguments of the launch file itself; the node parameter arguments are NODE_PARAMETER_ARGUMENTS.
LAUNCH_ARGUMENTS = {"image", "depth", "camera_info", "images", "params_file", "namespace", "rviz", "fastdds_profile"}
NODE_PARAMETER_ARGUMENTS = {
    "queries", "model", "pretrained", "checkpoint", "cache_dir", "random_weights", "image_encoder_engine", "device",
    "precision", "onednn", "method", "short_side", "probability_threshold", "max_rate", "reliable", "use_compressed",
    "quick_gelu", "use_depth", "publish_mask_compressed", "publish_overlay_compressed", "cameras", "max_batch",
}  # fmt: skip
RVIZ_FILES = ("zeroseg.rviz", "zeroseg_compressed.rviz")
RVIZ_PLACEHOLDERS = {"/zeroseg_rviz/input", "/zeroseg_rviz/mask_color", "/zeroseg_rviz/overlay"}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def module_constants(tree: ast.Module) -> dict[str, object]:
    constants: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Tuple)):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:  # a tuple of names or calls: not a constant
                continue
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = value
    return constants


def keyword_value(call: ast.Call, name: str, constants: dict[str, object]) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            if isinstance(keyword.value, ast.Constant):
                return keyword.value.value
            if isinstance(keyword.value, ast.Name):
                return constants.get(keyword.value.id)
            return keyword.value
    raise AssertionError(f"{ast.unparse(call.func)}(...) has no {name}=")


def cmake_executables() -> set[str]:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(ZEROSEG_EXECUTABLES(.*?)\)", cmake, re.S)
    assert block, "CMakeLists.txt lists no ZEROSEG_EXECUTABLES"
    return set(re.findall(r'"(\w+)=[\w.]+:\w+"', block.group(1)))


def setup_console_scripts() -> set[str]:
    return set(re.findall(r'"(\w+) = [\w.]+:\w+"', (ROOT / "setup.py").read_text()))


def node_subscriptions() -> set[str]:
    """Topics the node's modules (zeroseg_ros/ros/) subscribe to: create_subscription's literal topics, and the
    ``*_TOPIC`` constants used in the functions that call it."""
    topics: set[str] = set()
    for path in sorted((ROOT / "zeroseg_ros" / "ros").glob("*.py")):
        topics |= module_subscriptions(ast.parse(path.read_text()))
    return topics


def module_subscriptions(tree: ast.Module) -> set[str]:
    constants = module_constants(tree)
    topics: set[str] = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        subscriptions = calls(function, "create_subscription")
        topics |= {call.args[1].value for call in subscriptions if isinstance(call.args[1], ast.Constant)}
        if subscriptions:
            names = (node.id for node in ast.walk(function) if isinstance(node, ast.Name))
            topics |= {str(constants[name]) for name in names if name.endswith("_TOPIC") and name in constants}
    return topics


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text())


def zeroseg_node_call(tree: ast.Module) -> ast.Call:
    constants = module_constants(tree)
    nodes = [n for n in calls(tree, "Node") if keyword_value(n, "package", constants) == "zeroseg_ros"]
    assert len(nodes) == 1
    return nodes[0]


def test_launch_file_declares_its_own_and_the_node_parameter_arguments() -> None:
    tree = launch_tree()
    declared = {
        call.args[0].value for call in calls(tree, "DeclareLaunchArgument") if isinstance(call.args[0], ast.Constant)
    }
    assert declared == LAUNCH_ARGUMENTS
    # The node parameter arguments are declared in one loop over NODE_PARAMETER_ARGUMENTS, each default empty.
    assert set(module_constants(tree)["NODE_PARAMETER_ARGUMENTS"]) == NODE_PARAMETER_ARGUMENTS
    looped = [c for c in calls(tree, "DeclareLaunchArgument") if isinstance(c.args[0], ast.Name)]
    assert len(looped) == 1
    assert keyword_value(looped[0], "default_value", {}) == ""


def test_node_parameter_arguments_are_node_parameters() -> None:
    assert set(NODE_PARAMETER_ARGUMENTS) - {spec.name for spec in PARAMETERS} == set()


def test_every_name_value_setting_in_the_docs_is_a_launch_argument() -> None:
    """``name:=value`` in the README and docs is launch argument syntax (``-p name:=value`` and ``-r
    name:=value`` are a node parameter and a remapping of ``ros2 run``): ros2 launch silently ignores a name it
    does not declare."""
    documented: dict[str, set[str]] = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in re.finditer(r"(-[pr]\s+)?\b([a-z_]+):=", page.read_text()):
            if not match.group(1):  # -p/-r name:=value: a parameter or remapping of `ros2 run`
                documented.setdefault(match.group(2), set()).add(page.name)
    assert documented, "the README shows no launch argument"
    undeclared = {
        name: pages for name, pages in documented.items() if name not in LAUNCH_ARGUMENTS | NODE_PARAMETER_ARGUMENTS
    }
    assert not undeclared, f"documented as name:=value but not launch arguments: {undeclared}"


def test_launch_file_starts_an_installed_executable_with_installed_files() -> None:
    tree = launch_tree()
    constants = module_constants(tree)
    executable = keyword_value(zeroseg_node_call(tree), "executable", constants)
    assert executable in cmake_executables(), "the launch file's executable is not installed by CMakeLists.txt"
    assert executable in setup_console_scripts(), "the launch file's executable is not a setup.py console script"

    # The share/ files it names exist and CMakeLists.txt installs their folders.
    referenced = {
        call.args[0].elts[-1].value
        for call in calls(tree, "PathJoinSubstitution")
        if isinstance(call.args[0], ast.List) and isinstance(call.args[0].elts[-1], ast.Constant)
    }
    referenced |= {constants["RVIZ_CONFIG_RAW"], constants["RVIZ_CONFIG_COMPRESSED"]}
    assert referenced == {"zeroseg.yaml", *RVIZ_FILES}
    for name in referenced:
        assert (ROOT / "config" / name).is_file()
    assert re.search(
        r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)",
        (ROOT / "CMakeLists.txt").read_text(),
    )


def test_launch_remaps_only_topics_the_node_subscribes_to() -> None:
    remappings = keyword_value(zeroseg_node_call(launch_tree()), "remappings", {})
    assert isinstance(remappings, ast.List)
    # The single camera's topics; the cameras' (C/image, ...) follow as *per_camera (camera_remappings, below).
    sources = {pair.elts[0].value for pair in remappings.elts if not isinstance(pair, ast.Starred)}
    assert sources == {"image", "image/compressed", "depth", "camera_info"}
    assert sources <= node_subscriptions()


def test_launch_file_sets_no_environment_outside_the_processes_it_starts() -> None:
    """Set/UnsetEnvironmentVariable actions would change the environment of every launch file that includes
    this one; os.environ would miss what an including launch file set in the launch context."""
    tree = launch_tree()
    for action in ("SetEnvironmentVariable", "UnsetEnvironmentVariable", "PushEnvironment", "PopEnvironment"):
        assert not calls(tree, action), action
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "os" not in names, "the launch file reads os.environ instead of the launch context"
    nodes = calls(tree, "Node")
    assert len(nodes) == 2
    for node in nodes:
        scoped = [k.value for k in node.keywords if k.arg == "additional_env"]
        assert [ast.unparse(value) for value in scoped] == ["environment"]


def rviz_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", RVIZ_FILES)
def test_rviz_files_show_the_colour_mask_without_needing_tf(name: str) -> None:
    manager = rviz_config(name)["Visualization Manager"]
    displays = {display["Name"]: display for display in manager["Displays"]}
    assert all(display["Class"] == "rviz_default_plugins/Image" for display in displays.values())
    mask = next(display for display in displays.values() if display["Name"].startswith("Mask"))
    assert mask["Topic"]["Value"] == "/zeroseg_rviz/mask_color", "rviz2 shows a mono8 label mask almost black"
    # Image displays use no TF; the Identity transformer has no problem with any fixed frame (no map needed).
    assert manager["Transformation"]["Current"]["Class"] == "rviz_common/Identity"
    assert manager["Global Options"]["Fixed Frame"] != "map"


def test_rviz_input_follows_the_transport_and_every_placeholder_is_remapped() -> None:
    raw, compressed = (rviz_config(name)["Visualization Manager"]["Displays"] for name in RVIZ_FILES)
    raw_topics = {display["Topic"]["Value"] for display in raw}
    compressed_topics = {display["Topic"]["Value"] for display in compressed}
    assert raw_topics == RVIZ_PLACEHOLDERS
    # rviz's Image display takes the image_transport transport from the topic's last name.
    assert compressed_topics == RVIZ_PLACEHOLDERS - {"/zeroseg_rviz/input"} | {"/zeroseg_rviz/input/compressed"}
    assert [d["Name"] for d in raw][1:] == [d["Name"] for d in compressed][1:]
    constants = module_constants(launch_tree())
    remapped = {value for name, value in constants.items() if name.startswith("RVIZ_") and name.endswith("_TOPIC")}
    assert remapped == raw_topics | compressed_topics
    assert all(
        f"({name}," in LAUNCH_FILE.read_text()
        for name in constants
        if name.startswith("RVIZ_") and name.endswith("_TOPIC")
    )


# --- the launch file's functions, run with stand-ins for ROS 2 launch (not on PyPI) -------------------------


class Recorded:
    """Stand-in for a launch action or substitution: keeps what it was built with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class StubLaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: StubContext) -> str:
        return context.launch_configurations[self.name]


class StubContext:
    def __init__(self, launch_configurations: dict[str, str], environment: dict[str, str]) -> None:
        self.launch_configurations = launch_configurations
        self.environment = environment


@pytest.fixture
def stub_launch(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The launch file loaded with stand-in ``launch`` and ``launch_ros`` modules (restored afterwards)."""
    modules = {
        "launch": {"LaunchContext": StubContext, "LaunchDescription": Recorded},
        "launch.actions": {"DeclareLaunchArgument": Recorded, "OpaqueFunction": Recorded},
        "launch.substitutions": {"LaunchConfiguration": StubLaunchConfiguration, "PathJoinSubstitution": Recorded},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Recorded},
        "launch_ros.substitutions": {"FindPackageShare": Recorded},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("zeroseg_launch_stubbed", LAUNCH_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def launch_arguments(stub_launch: types.ModuleType, params_file: Path, **given: str) -> dict[str, str]:
    """Every declared argument at its default, then ``given``."""
    description = stub_launch.generate_launch_description()
    declared = [e for e in description.args[0] if isinstance(e, Recorded) and "default_value" in e.kwargs]
    values = {e.args[0]: e.kwargs["default_value"] for e in declared}
    assert set(values) == LAUNCH_ARGUMENTS | NODE_PARAMETER_ARGUMENTS
    values["params_file"] = str(params_file)
    values.update(given)
    return values


def run_setup(stub_launch: types.ModuleType, arguments: dict[str, str], environment: dict[str, str]) -> list[Recorded]:
    description = stub_launch.generate_launch_description()
    opaque = description.args[0][-1]
    return opaque.kwargs["function"](StubContext(arguments, environment))


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("/**/zeroseg:\n  ros__parameters:\n    short_side: 448\n    use_compressed: true\n")
    return path


def test_parameters_not_given_at_launch_are_left_to_the_params_file(
    stub_launch: types.ModuleType, params_file: Path
) -> None:
    (node,) = run_setup(stub_launch, launch_arguments(stub_launch, params_file), {"ROS_DISTRO": "kilted"})
    # Only the file: use_compressed (and everything else) is not overridden by a launch default.
    assert node.kwargs["parameters"] == [str(params_file)]


def test_parameters_given_at_launch_are_typed_and_come_after_the_params_file(
    stub_launch: types.ModuleType, params_file: Path
) -> None:
    arguments = launch_arguments(
        stub_launch,
        params_file,
        short_side="224",
        precision="bf16",
        reliable="true",
        use_compressed="false",
        probability_threshold="1",
        queries="person, cone",
        device=" ",
    )
    (node,) = run_setup(stub_launch, arguments, {})
    file, overrides = node.kwargs["parameters"]
    assert file == str(params_file)
    assert overrides == {
        "short_side": 224,
        "precision": "bf16",
        "reliable": True,
        "use_compressed": False,
        "probability_threshold": 1.0,
        "queries": "person, cone",
    }
    assert type(overrides["probability_threshold"]) is float
    assert type(overrides["short_side"]) is int


@pytest.mark.parametrize(("name", "value"), [("short_side", "300.5"), ("reliable", "maybe"), ("max_rate", "fast")])
def test_a_launch_argument_of_the_wrong_type_stops_the_launch_with_its_name(
    stub_launch: types.ModuleType, params_file: Path, name: str, value: str
) -> None:
    with pytest.raises(stub_launch.LaunchArgumentError, match=name):
        run_setup(stub_launch, launch_arguments(stub_launch, params_file, **{name: value}), {})


LARGE = "fastdds_large_frames.xml"


@pytest.mark.parametrize(
    ("environment", "profile", "expected"),
    [
        # Kilted (Fast DDS 3) reads the new name only; Humble and Jazzy (Fast DDS 2) the old one too.
        ({"ROS_DISTRO": "kilted"}, "", {"FASTDDS_DEFAULT_PROFILES_FILE": LARGE}),
        (
            {"ROS_DISTRO": "jazzy"},
            "",
            {"FASTDDS_DEFAULT_PROFILES_FILE": LARGE, "FASTRTPS_DEFAULT_PROFILES_FILE": LARGE},
        ),
        # A profile the user (or an including launch file) exported wins, and is never removed.
        ({"ROS_DISTRO": "humble", "FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "", {}),
        ({"ROS_DISTRO": "kilted", "FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "none", {}),
        ({"ROS_DISTRO": "kilted"}, "none", {}),
        ({"ROS_DISTRO": "kilted", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, "", {}),
        ({"ROS_DISTRO": "kilted"}, "/other.xml", {"FASTDDS_DEFAULT_PROFILES_FILE": "/other.xml"}),
    ],
)
def test_fastdds_profile_goes_to_the_launched_processes_only(
    stub_launch: types.ModuleType,
    params_file: Path,
    environment: dict[str, str],
    profile: str,
    expected: dict[str, str],
) -> None:
    context_environment = dict(environment)
    arguments = launch_arguments(stub_launch, params_file, fastdds_profile=profile, rviz="true")
    node, rviz = run_setup(stub_launch, arguments, context_environment)
    assert context_environment == environment, "the launch context's environment was changed"
    for process in (node, rviz):
        got = {k: Path(v).name if v.endswith(LARGE) else v for k, v in process.kwargs["additional_env"].items()}
        assert got == expected


@pytest.mark.parametrize(
    ("given", "rviz_file"), [({}, "zeroseg_compressed.rviz"), ({"use_compressed": "false"}, "zeroseg.rviz")]
)
def test_rviz_input_follows_use_compressed_of_the_launch_or_the_params_file(
    stub_launch: types.ModuleType, params_file: Path, given: dict[str, str], rviz_file: str
) -> None:
    # params_file says use_compressed: true; a launch argument wins over it.
    arguments = launch_arguments(
        stub_launch, params_file, rviz="true", image="/front/image_raw", namespace="/perception/", **given
    )
    _, rviz = run_setup(stub_launch, arguments, {})
    config = rviz.kwargs["arguments"][1]
    assert config.args[0][-1] == rviz_file
    assert dict(rviz.kwargs["remappings"]) == {
        "/zeroseg_rviz/input": "/front/image_raw",
        "/zeroseg_rviz/input/compressed": "/front/image_raw/compressed",
        "/zeroseg_rviz/overlay": "/perception/overlay",
        "/zeroseg_rviz/mask_color": "/perception/mask_color",
    }


# --- the real ROS 2 launch -------------------------------------------------------------------------------


def test_launch_description_with_ros2_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # launch_ros first: without ROS 2, `import launch` would find this repository's launch/ folder instead.
    pytest.importorskip("launch_ros", reason="ROS 2 'launch_ros' is not importable (not on PyPI; needs ROS 2)")
    launch = importlib.import_module("launch")
    actions = importlib.import_module("launch.actions")
    utilities = importlib.import_module("launch.utilities")

    spec = importlib.util.spec_from_file_location("zeroseg_launch", LAUNCH_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, actions.DeclareLaunchArgument)]
    assert {e.name for e in declared} == LAUNCH_ARGUMENTS | NODE_PARAMETER_ARGUMENTS

    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n")
    context = launch.LaunchContext()
    for argument in declared:
        argument.visit(context)  # sets each default, as ros2 launch does before the OpaqueFunction runs
    context.launch_configurations.update(
        {
            "image": "/front/image_raw",
            "queries": "person, cone",
            "short_side": "224",
            "params_file": str(params_file),
            "namespace": "perception",
            "rviz": "true",
        }
    )
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ROS_DISTRO", "humble")
    before = dict(context.environment)
    opaque = next(e for e in description.entities if isinstance(e, actions.OpaqueFunction))
    node, rviz = opaque.execute(context)
    assert dict(context.environment) == before, "the launch changed the environment of the launch context"
    # The large-frames profile under both names on a Fast DDS 2 distro, for the launched processes only.
    for process in (node, rviz):
        env = {
            utilities.perform_substitutions(context, name): utilities.perform_substitutions(context, value)
            for name, value in process.additional_env
        }
        assert {name: Path(value).name for name, value in env.items()} == {
            "FASTDDS_DEFAULT_PROFILES_FILE": "fastdds_large_frames.xml",
            "FASTRTPS_DEFAULT_PROFILES_FILE": "fastdds_large_frames.xml",
        }
    assert node.node_package == "zeroseg_ros"
    assert node.node_executable == "zeroseg_node"
    assert rviz.node_executable == "rviz2"


@pytest.mark.parametrize(
    ("given", "camera_info"),
    [({}, "/front/camera_info"), ({"camera_info": "/front/color/camera_info"}, "/front/color/camera_info")],
)
def test_depth_and_camera_info_are_remapped_beside_the_image(
    stub_launch: types.ModuleType, params_file: Path, given: dict[str, str], camera_info: str
) -> None:
    arguments = launch_arguments(stub_launch, params_file, image="/front/image_raw", depth="/front/depth", **given)
    (node,) = run_setup(stub_launch, arguments, {})
    assert dict(node.kwargs["remappings"]) == {
        "image": "/front/image_raw",
        "image/compressed": "/front/image_raw/compressed",
        "depth": "/front/depth",
        "camera_info": camera_info,
    }


def test_each_camera_is_remapped_to_its_image_and_rviz_shows_the_first(
    stub_launch: types.ModuleType, params_file: Path
) -> None:
    arguments = launch_arguments(
        stub_launch,
        params_file,
        cameras="front, left",
        images="/cam_front/image_raw, /cam_left/color/image_raw",
        rviz="true",
        namespace="perception",
    )
    node, rviz = run_setup(stub_launch, arguments, {})
    remappings = dict(node.kwargs["remappings"])
    assert {name: remappings[name] for name in remappings if name.startswith(("front/", "left/"))} == {
        "front/image": "/cam_front/image_raw",
        "front/image/compressed": "/cam_front/image_raw/compressed",
        "front/camera_info": "/cam_front/camera_info",
        "left/image": "/cam_left/color/image_raw",
        "left/image/compressed": "/cam_left/color/image_raw/compressed",
        "left/camera_info": "/cam_left/color/camera_info",
    }
    assert node.kwargs["parameters"][-1]["cameras"] == "front, left"
    # params_file says use_compressed: true, so RViz takes the compressed input.
    assert dict(rviz.kwargs["remappings"]) == {
        "/zeroseg_rviz/input": "/cam_front/image_raw",
        "/zeroseg_rviz/input/compressed": "/cam_front/image_raw/compressed",
        "/zeroseg_rviz/overlay": "/perception/front/overlay",
        "/zeroseg_rviz/mask_color": "/perception/front/mask_color",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cameras": "front, left", "images": "/cam_front/image_raw"}, "1 topics for 2 cameras"),
        ({"cameras": "front, front", "images": "/a/image, /b/image"}, "front is given more than once"),
    ],
)
def test_images_that_do_not_match_the_cameras_stop_the_launch(
    stub_launch: types.ModuleType, params_file: Path, given: dict[str, str], message: str
) -> None:
    with pytest.raises(stub_launch.LaunchArgumentError, match=message):
        run_setup(stub_launch, launch_arguments(stub_launch, params_file, **given), {})
