"""Child processes that can be ended as a whole: the main job's, the ROS benchmark's and the tests'.

Each child starts in a session of its own (``start_new_session=True``), so its group holds everything it
spawned; ending it by process group means a child that hangs (rclpy was seen to hang at shutdown) is killed
rather than left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT the process's group (a clean ROS shutdown), SIGKILL it if it has not ended after ``timeout``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    return int(process.returncode)
