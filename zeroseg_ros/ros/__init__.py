"""The ROS 2 adapter: the node, its parameter table, the inference worker, diagnostics, image conversion,
transport settings and the demo camera. Built on ``core`` and ``engines``."""
