"""launch/zeroseg.launch.py names what the package installs: its executable, parameters file, RViz file and
the topics the node really subscribes to. Checked from the source (ast) everywhere, and by running the launch
description with ROS 2 ``launch`` where it is importable."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "zeroseg.launch.py"
LAUNCH_ARGUMENTS = {"image", "queries", "params_file", "namespace", "use_compressed", "rviz", "fastdds_profile"}


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
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
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
    """Topics node.py subscribes to: create_subscription's literal topics, and the ``*_TOPIC`` constants used in
    the functions that call it."""
    tree = ast.parse((ROOT / "zeroseg_ros" / "ros" / "node.py").read_text())
    constants = module_constants(tree)
    topics: set[str] = set()
    for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
        subscriptions = calls(function, "create_subscription")
        topics |= {call.args[1].value for call in subscriptions if isinstance(call.args[1], ast.Constant)}
        if subscriptions:
            names = (node.id for node in ast.walk(function) if isinstance(node, ast.Name))
            topics |= {str(constants[name]) for name in names if name.endswith("_TOPIC") and name in constants}
    return topics


def test_launch_file_declares_the_documented_arguments() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    declared = {call.args[0].value for call in calls(tree, "DeclareLaunchArgument")}
    assert declared == LAUNCH_ARGUMENTS


def test_launch_file_starts_an_installed_executable_with_installed_files() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = module_constants(tree)
    nodes = calls(tree, "Node")
    zeroseg = [n for n in nodes if keyword_value(n, "package", constants) == "zeroseg_ros"]
    assert len(zeroseg) == 1
    executable = keyword_value(zeroseg[0], "executable", constants)
    assert executable in cmake_executables(), "the launch file's executable is not installed by CMakeLists.txt"
    assert executable in setup_console_scripts(), "the launch file's executable is not a setup.py console script"

    # The share/ files it names exist and CMakeLists.txt installs their folders.
    referenced = {
        call.args[0].elts[-1].value
        for call in calls(tree, "PathJoinSubstitution")
        if isinstance(call.args[0], ast.List) and isinstance(call.args[0].elts[-1], ast.Constant)
    }
    assert referenced == {"zeroseg.yaml", "zeroseg.rviz"}
    for name in referenced:
        assert (ROOT / "config" / name).is_file()
    assert re.search(
        r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)",
        (ROOT / "CMakeLists.txt").read_text(),
    )


def test_launch_remaps_only_topics_the_node_subscribes_to() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = module_constants(tree)
    zeroseg = next(n for n in calls(tree, "Node") if keyword_value(n, "package", constants) == "zeroseg_ros")
    remappings = keyword_value(zeroseg, "remappings", constants)
    assert isinstance(remappings, ast.List)
    sources = {pair.elts[0].value for pair in remappings.elts}
    assert sources == {"image", "image/compressed"}
    assert sources <= node_subscriptions()


def test_rviz_file_shows_the_placeholders_the_launch_file_remaps() -> None:
    rviz = yaml.safe_load((ROOT / "config" / "zeroseg.rviz").read_text())
    topics = {display["Topic"]["Value"] for display in rviz["Visualization Manager"]["Displays"]}
    launch_source = LAUNCH_FILE.read_text()
    assert topics == {"/zeroseg_rviz/input", "/zeroseg_rviz/overlay", "/zeroseg_rviz/mask"}
    for topic in topics:
        assert f'"{topic}"' in launch_source


def test_launch_description_with_ros2_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # launch_ros first: without ROS 2, `import launch` would find this repository's launch/ folder instead.
    pytest.importorskip("launch_ros", reason="ROS 2 'launch_ros' is not importable (not on PyPI; needs ROS 2)")
    launch = importlib.import_module("launch")
    actions = importlib.import_module("launch.actions")

    spec = importlib.util.spec_from_file_location("zeroseg_launch", LAUNCH_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    arguments = {e.name for e in description.entities if isinstance(e, actions.DeclareLaunchArgument)}
    assert arguments == LAUNCH_ARGUMENTS

    params_file = tmp_path / "params.yaml"
    params_file.write_text("{}\n")
    context = launch.LaunchContext()
    context.launch_configurations.update(
        {
            "image": "/front/image_raw",
            "queries": "person, cone",
            "params_file": str(params_file),
            "namespace": "perception",
            "use_compressed": "true",
            "rviz": "false",
            "fastdds_profile": "",
        }
    )
    opaque = next(e for e in description.entities if isinstance(e, actions.OpaqueFunction))
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    monkeypatch.setenv("ROS_DISTRO", "humble")
    *environment, node = opaque.execute(context)
    # Set before the node starts: the large-frames profile under both names on a Fast DDS 2 distro.
    utilities = importlib.import_module("launch.utilities")
    assert {
        (utilities.perform_substitutions(context, a.name), Path(utilities.perform_substitutions(context, a.value)).name)
        for a in environment
    } == {
        ("FASTDDS_DEFAULT_PROFILES_FILE", "fastdds_large_frames.xml"),
        ("FASTRTPS_DEFAULT_PROFILES_FILE", "fastdds_large_frames.xml"),
    }
    assert node.node_package == "zeroseg_ros"
    assert node.node_executable == "zeroseg_node"
