# Shared by scripts/setup.sh and scripts/test-jazzy.sh (sourced, not run): the venv, the stamps that make a
# second run a quick no-op, the header links the ros-* wheels need, and colcon builds. The caller defines
# say() and runs from the checkout's root.

# ensure_venv VENV PYTHON: a Python 3.11 venv at VENV, made again when missing or of another version.
ensure_venv() {
  local venv="$1" python_bin="$2"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    say "creating $venv with $python_bin"
    "$python_bin" -m venv --clear "$venv"
  fi
}

# content_hash FILE...: one SHA-256 of the files' contents, the key a stamp keeps.
content_hash() {
  cat "$@" | sha256sum | cut -d' ' -f1
}

# stamp_differs STAMP HASH: whether STAMP does not hold HASH (its inputs changed since the last success).
stamp_differs() {
  [[ "$(cat "$1" 2>/dev/null)" != "$2" ]]
}

# link_if_missing TARGET LINK: the ros-* wheels' CMake targets name paths of the machine they were built on
# (manylinux /opt/python); LINK points there at TARGET. Made only when missing or dangling.
link_if_missing() {
  local target="$1" link="$2"
  if [[ -e "$link" ]]; then return; fi
  say "linking $link -> $target"
  mkdir -p "$(dirname "$link")"
  rm -f "$link"
  ln -s "$target" "$link"
}

# colcon_build LOG WHAT COLCON_ARGUMENT...: `colcon build --merge-install ...`, its output in log/LOG; on
# failure the log is shown and the script exits.
colcon_build() {
  local log_name="$1" what="$2"
  shift 2
  mkdir -p log
  if ! colcon build --merge-install "$@" > "log/$log_name" 2>&1; then
    cat "log/$log_name" >&2
    say "colcon build of $what failed (full log above)"
    exit 1
  fi
}
