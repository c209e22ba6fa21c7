# Environment of this checkout: source it (`. scripts/env.sh`) after `bash scripts/setup.sh`.
# Python from .venv; zeroseg_ros from the checkout first, then the colcon install/ tree that holds the
# generated zeroseg_ros.msg (zeroseg_ros/__init__.py joins both folders); ROS 2 from the ros-* wheels.
# ZEROSEG_VENV and ZEROSEG_INSTALL choose another venv and colcon install tree (scripts/test-jazzy.sh:
# .venv-jazzy and install-jazzy). Paths are put in front of what the shell already has (a sourced
# /opt/ros/<distro>/setup.bash, another workspace), never in place of it.
ZEROSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZEROSEG_VENV="${ZEROSEG_VENV:-$ZEROSEG_ROOT/.venv}"
ZEROSEG_INSTALL="${ZEROSEG_INSTALL:-$ZEROSEG_ROOT/install}"
ZEROSEG_PYVER="$("$ZEROSEG_VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo 3.11)"
export ZEROSEG_ROOT ZEROSEG_VENV ZEROSEG_INSTALL

# zeroseg_prepend VARIABLE ENTRY...: VARIABLE becomes ENTRY...:<its old entries other than these>, so sourcing
# this file twice does not grow the paths.
zeroseg_prepend() {
  local variable="$1" result="" entry
  local -a old=()
  shift
  for entry in "$@"; do result="${result:+$result:}$entry"; done
  IFS=: read -r -a old <<< "${!variable-}"
  for entry in "${old[@]}"; do
    case ":$result:" in *":$entry:"*) ;; *) if [[ -n "$entry" ]]; then result="$result:$entry"; fi ;; esac
  done
  export "$variable=$result"
}

zeroseg_prepend PATH "$ZEROSEG_VENV/bin"
zeroseg_prepend PYTHONPATH "$ZEROSEG_ROOT" "$ZEROSEG_INSTALL/lib/python$ZEROSEG_PYVER/site-packages"
zeroseg_prepend LD_LIBRARY_PATH "$ZEROSEG_INSTALL/lib"
zeroseg_prepend AMENT_PREFIX_PATH "$ZEROSEG_INSTALL" "$ZEROSEG_VENV"
zeroseg_prepend CMAKE_PREFIX_PATH "$ZEROSEG_VENV"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# DDS discovery on this machine only, with the variable the distro reads: Humble has ROS_LOCALHOST_ONLY; Iron
# and later read ROS_AUTOMATIC_DISCOVERY_RANGE (rcl discovery_options, and warn that ROS_LOCALHOST_ONLY is
# deprecated). Set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET (Humble: ROS_LOCALHOST_ONLY=0) to reach a camera on
# another host. The ros-* wheels set no ROS_DISTRO: they are Iron or later.
if [[ "${ROS_DISTRO:-}" == "humble" ]]; then
  export ROS_LOCALHOST_ONLY="${ROS_LOCALHOST_ONLY:-1}"
else
  export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
fi
