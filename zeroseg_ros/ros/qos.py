"""The QoS profiles of the node's topics, chosen on purpose and defined once.

Camera streams (colour, depth, camera_info) are best effort and keep only the newest few messages, like a
camera driver's sensor-data profile, or reliable for bag replay. Outputs are reliable with depth 1: a slow
subscriber gets the newest result, never a queue. Labels are latched (transient local) for late joiners.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Reliable + volatile: matches every reliable publisher, volatile (rclpy's and rclcpp's default) and
# transient-local alike. A transient-local subscription would refuse volatile publishers (incompatible QoS)
# and drop their queries. Queries set before the node starts belong in the ``queries`` parameter.
QUERIES_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def camera_qos(reliable: bool, depth: int = 1) -> QoSProfile:
    """The sensor-data profile keeping the newest ``depth`` messages, or reliable for bag replay."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
