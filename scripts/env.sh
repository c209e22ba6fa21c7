# Environment of this checkout: source it (`. scripts/env.sh`) after `bash scripts/setup.sh`.
# Python from .venv; zeroseg_ros from the checkout first, then the colcon install/ tree that holds the
# generated zeroseg_ros.msg (zeroseg_ros/__init__.py joins both folders); ROS 2 from the ros-* wheels.
ZEROSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZEROSEG_VENV="${ZEROSEG_VENV:-$ZEROSEG_ROOT/.venv}"
ZEROSEG_PYVER="$("$ZEROSEG_VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo 3.11)"
export ZEROSEG_ROOT ZEROSEG_VENV
export PATH="$ZEROSEG_VENV/bin:$PATH"
export PYTHONPATH="$ZEROSEG_ROOT:$ZEROSEG_ROOT/install/lib/python$ZEROSEG_PYVER/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$ZEROSEG_ROOT/install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$ZEROSEG_ROOT/install:$ZEROSEG_VENV"
export CMAKE_PREFIX_PATH="$ZEROSEG_VENV"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# DDS discovery on this machine only (set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET to reach a camera elsewhere).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
