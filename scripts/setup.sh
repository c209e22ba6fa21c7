#!/usr/bin/env bash
# Creates or refreshes everything this checkout needs; a fast no-op when nothing changed.
#   .venv/            Python venv with requirements/{core,ros,dev,label}.txt and zeroseg_ros installed editable
#   build/ install/   colcon build of this ROS 2 package (generates zeroseg_ros.msg.Segmentation)
#   build-test/ install-test/   colcon build of the test-only interface packages in test/interfaces/
#                     (vision_msgs is not on PyPI); only the tests put it on their paths
# Then `. scripts/env.sh` gives the environment to run the node, the tests and the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="$root/.venv"
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"

say() { echo "[setup] $*"; }
# shellcheck source=scripts/common.sh
. scripts/common.sh

ensure_venv "$venv" "$python_bin"

# Reinstall only when a requirements file or setup.py changed since the last successful install.
requirements_stamp="$venv/.zeroseg-requirements.sha256"
requirements_hash="$(content_hash requirements/core.txt requirements/ros.txt requirements/dev.txt requirements/label.txt \
  setup.py)"
if stamp_differs "$requirements_stamp" "$requirements_hash"; then
  say "installing requirements into $venv"
  "$venv/bin/python" -m pip install --quiet -r requirements/core.txt -r requirements/ros.txt -r requirements/dev.txt \
    -r requirements/label.txt
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$requirements_hash" > "$requirements_stamp"
fi

# The wheels' CMake targets find this Python's headers and this venv's numpy headers through these links.
python_include="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
numpy_include="$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')"
wheel_python_root=/opt/python/cp311-cp311
wheel_numpy_include="$wheel_python_root/lib/python3.11/site-packages/numpy/_core/include"
link_if_missing "$python_include" "$wheel_python_root/include/python3.11"
link_if_missing "$numpy_include" "$wheel_numpy_include"

# shellcheck source=scripts/env.sh
. scripts/env.sh

# colcon build when the package's build inputs changed (the Python sources are used from the checkout).
build_stamp="$root/install/.zeroseg-build.sha256"
build_hash="$(content_hash package.xml CMakeLists.txt msg/*.msg srv/*.srv requirements/ros.txt)"
if stamp_differs "$build_stamp" "$build_hash" || [[ ! -d install/share/zeroseg_ros ]]; then
  say "colcon build (message generation) into build/ install/"
  # The venv lives inside the source tree; CMake refuses exported include dirs there, so numpy's headers
  # are named through the link above.
  colcon_build colcon-build.txt "the package" --base-paths . --packages-select zeroseg_ros \
    --cmake-args "-DPython3_NumPy_INCLUDE_DIR=$wheel_numpy_include" -DBUILD_TESTING=OFF
  echo "$build_hash" > "$build_stamp"
fi

# The test-only interface packages (test/interfaces/: vision_msgs for LabelInfo), built apart from install/ so
# that the node sees them only where a test puts install-test/ on its paths.
test_stamp="$root/install-test/.zeroseg-build.sha256"
test_hash="$(content_hash test/interfaces/*/package.xml test/interfaces/*/CMakeLists.txt test/interfaces/*/msg/*.msg \
  requirements/ros.txt)"
if stamp_differs "$test_stamp" "$test_hash"; then
  say "colcon build (test interfaces) into build-test/ install-test/"
  colcon_build colcon-build-test.txt "the test interfaces" --base-paths test/interfaces --build-base build-test \
    --install-base install-test --cmake-args "-DPython3_NumPy_INCLUDE_DIR=$wheel_numpy_include" -DBUILD_TESTING=OFF
  echo "$test_hash" > "$test_stamp"
fi

python -c 'from zeroseg_ros.msg import Segmentation' || { say "zeroseg_ros.msg does not import"; exit 1; }
say "ready (. scripts/env.sh)"
