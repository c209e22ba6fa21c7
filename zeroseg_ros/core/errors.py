"""Exception types of zeroseg_ros.

Every error the core raises on bad input is a ``ZerosegError``, so a caller (the ROS node, the CLI) can catch
one type, report the message and carry on with the next frame.
"""


class ZerosegError(Exception):
    """Base class of every error raised by zeroseg_ros on bad input or configuration."""


class InvalidImageError(ZerosegError, ValueError):
    """The image cannot be segmented: wrong shape, dtype, encoding, empty or too large."""


class InvalidQueryError(ZerosegError, ValueError):
    """The text queries cannot be used: empty, blank, too many or too long."""


class ConfigError(ZerosegError, ValueError):
    """A configuration value is out of range or unknown."""


class WeightsNotFoundError(ZerosegError, RuntimeError):
    """No CLIP weights could be loaded, neither from a local checkpoint nor by download."""


class InferenceResourceError(ZerosegError, RuntimeError):
    """The device ran out of memory for this frame; smaller frames or fewer queries may still fit."""
