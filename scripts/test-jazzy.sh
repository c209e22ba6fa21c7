#!/usr/bin/env bash
# The test suite once more against ROS 2 Jazzy (rclpy 7.1, Fast DDS 2.14) with numpy 1.26 and OpenCV 4, the
# versions of Humble and JetPack 6 (requirements/constraints-humble-jetson.txt). scripts/test.sh runs it after
# the Kilted pass; it also runs alone. Creates or refreshes, like setup.sh (a fast no-op when nothing changed):
#   .venv-jazzy/                  requirements/core.txt with the pins of constraints-humble-jetson.txt in place
#                                 of its own, requirements/ros-jazzy.txt and requirements/dev.txt
#   build-jazzy/ install-jazzy/   colcon build of this package with the Jazzy wheels
# Arguments go to pytest (default: the whole suite but the GPU tests). Where a Python 3.10 runs (Humble's and
# JetPack 6's version; here pyenv's), the tests that need no torch and no rclpy run with it too, in
# .venv-py310 with the same numpy and OpenCV (torch for 3.10 is not installed: over 3 GB with its CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="$root/.venv-jazzy"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"

say() { echo "[jazzy] $*"; }
# shellcheck source=scripts/common.sh
. scripts/common.sh

ensure_venv "$venv" "$python_bin"

# core.txt less the packages that constraints-humble-jetson.txt pins (numpy 1, OpenCV 4, ...), then those pins.
requirements_stamp="$venv/.zeroseg-requirements.sha256"
requirements_hash="$(content_hash requirements/core.txt requirements/constraints-humble-jetson.txt \
  requirements/ros-jazzy.txt requirements/dev.txt setup.py)"
if stamp_differs "$requirements_stamp" "$requirements_hash"; then
  say "installing requirements into $venv"
  core="$venv/core-less-constraints.txt"
  grep -vE "^($(grep -oE '^[A-Za-z0-9_.-]+==' requirements/constraints-humble-jetson.txt | tr -d = | paste -sd'|'))==" \
    requirements/core.txt > "$core"
  "$venv/bin/python" -m pip install --quiet -r "$core" -r requirements/constraints-humble-jetson.txt \
    -r requirements/ros-jazzy.txt -r requirements/dev.txt
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$requirements_hash" > "$requirements_stamp"
fi

# Only this venv's paths: nothing of the Kilted environment (.venv, install/) that scripts/test.sh sourced.
unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH LD_LIBRARY_PATH
export ZEROSEG_VENV="$venv" ZEROSEG_INSTALL="$root/install-jazzy"
# shellcheck source=scripts/env.sh
. scripts/env.sh

# The ros-* wheels' CMake targets name the build machine's paths (setup.sh links the Kilted ones). numpy 1
# keeps its headers in numpy/core/include (numpy 2: numpy/_core/include), so this link does not clash with
# setup.sh's; it lies outside the source tree, where CMake accepts exported include directories.
numpy_include="$(python -c 'import numpy; print(numpy.get_include())')"
wheel_python_root=/opt/python/cp311-cp311
wheel_numpy_include="$wheel_python_root/lib/python3.11/site-packages/numpy/core/include"
python_include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
link_if_missing "$python_include" "$wheel_python_root/include/python3.11"
link_if_missing "$numpy_include" "$wheel_numpy_include"

build_stamp="$ZEROSEG_INSTALL/.zeroseg-build.sha256"
build_hash="$(content_hash package.xml CMakeLists.txt msg/*.msg srv/*.srv requirements/ros-jazzy.txt \
  requirements/constraints-humble-jetson.txt)"
if stamp_differs "$build_stamp" "$build_hash" || [[ ! -d "$ZEROSEG_INSTALL/share/zeroseg_ros" ]]; then
  say "colcon build (message generation) into build-jazzy/ install-jazzy/"
  colcon_build colcon-build-jazzy.txt "the package" --base-paths . --packages-select zeroseg_ros \
    --build-base build-jazzy --install-base install-jazzy \
    --cmake-args "-DPython3_NumPy_INCLUDE_DIR=$wheel_numpy_include" -DBUILD_TESTING=OFF
  echo "$build_hash" > "$build_stamp"
fi

# The test-only interface packages (test/interfaces/: vision_msgs) built with the Jazzy wheels too.
export ZEROSEG_TEST_INSTALL="$root/install-test-jazzy"
test_stamp="$ZEROSEG_TEST_INSTALL/.zeroseg-build.sha256"
test_hash="$(content_hash test/interfaces/*/package.xml test/interfaces/*/CMakeLists.txt test/interfaces/*/msg/*.msg \
  requirements/ros-jazzy.txt)"
if stamp_differs "$test_stamp" "$test_hash"; then
  say "colcon build (test interfaces) into build-test-jazzy/ install-test-jazzy/"
  colcon_build colcon-build-test-jazzy.txt "the test interfaces" --base-paths test/interfaces \
    --build-base build-test-jazzy --install-base install-test-jazzy \
    --cmake-args "-DPython3_NumPy_INCLUDE_DIR=$wheel_numpy_include" -DBUILD_TESTING=OFF
  echo "$test_hash" > "$test_stamp"
fi

python - <<'EOF'
import cv2
import numpy
import rclpy

from zeroseg_ros.msg import Segmentation  # noqa: F401

assert numpy.__version__.startswith("1."), numpy.__version__
assert cv2.__version__.startswith("4."), cv2.__version__
assert "/.venv-jazzy/" in rclpy.__file__, rclpy.__file__
print(f"[jazzy] rclpy from {rclpy.__file__}, numpy {numpy.__version__}, OpenCV {cv2.__version__}")
EOF

export ROS_DISTRO=jazzy  # what /opt/ros/jazzy/setup.bash sets: the node then writes Fast DDS 2's variable too
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 100))}"
if [[ $# -eq 0 ]]; then set -- -m "not gpu"; fi
python -m pytest -ra -p no:cacheprovider "$@"

python310=""
for candidate in python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10; do
  if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then python310="$candidate"; break; fi
done
if [[ -z "$python310" ]]; then
  say "no Python 3.10 here: the Python 3.10 pass is left out"
  exit 0
fi
venv310="$root/.venv-py310"
if [[ ! -x "$venv310/bin/python" ]]; then
  say "creating $venv310 with $python310"
  "$python310" -m venv --clear "$venv310"
fi
stamp310="$venv310/.zeroseg-requirements.sha256"
if stamp_differs "$stamp310" "$requirements_hash"; then
  "$venv310/bin/python" -m pip install --quiet -c requirements/constraints-humble-jetson.txt -c requirements/dev.txt \
    -c "$venv/core-less-constraints.txt" numpy opencv-python-headless PyYAML pytest pytest-timeout
  echo "$requirements_hash" > "$stamp310"
fi
# test/conftest.py imports torch: --noconftest. These files import neither torch nor rclpy (test_image_codec
# skips itself where the sensor_msgs wheel is missing, as in this venv).
say "Python 3.10 ($python310): the tests without torch and rclpy"
PYTHONPATH="$root" "$venv310/bin/python" -m pytest -ra -p no:cacheprovider --noconftest \
  test/test_image_codec.py test/test_overlay.py test/test_ros_env.py test/test_launch.py test/test_package.py \
  test/test_eval_metrics.py
