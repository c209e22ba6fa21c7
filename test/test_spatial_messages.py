"""The messages ros/spatial.py builds (PointCloud2 layout, SegmentedObjects, MarkerArray, vision_msgs
detections through a duck-typed stand-in where vision_msgs is not installed) and the stamp pairing buffer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from zeroseg_ros.core.geometry import LabelledPoints
from zeroseg_ros.core.objects import SegmentedRegion
from zeroseg_ros.core.pairing import StampBuffer

pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) not installed: run scripts/setup.sh")
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from zeroseg_ros.ros import spatial

LABELS = ("wall", "box")
REGIONS = [
    SegmentedRegion(1, (0, 0, 64, 48), 2000, 0.6, np.array([0.1, -0.2, 2.0]), np.array([2.4, 1.8, 0.0]), 0.9),
    SegmentedRegion(2, (20, 10, 8, 6), 48, 0.8, np.array([0.3, -0.1, 1.5]), np.array([0.4, 0.3, 0.002]), 1.0),
    SegmentedRegion(2, (50, 40, 3, 3), 9, 0.7),  # no valid depth
]


def header() -> Header:
    result = Header(frame_id="camera_color_optical_frame")
    result.stamp.sec, result.stamp.nanosec = 17, 500
    return result


def test_point_cloud_has_xyz_label_and_confidence_fields_in_little_endian_records() -> None:
    points = LabelledPoints(
        xyz=np.array([[0.1, 0.2, 1.5], [-0.3, 0.0, 2.0], [0.0, -0.4, 3.25]], dtype=np.float32),
        labels=np.array([1, 2, 65535], dtype=np.uint16),
        confidence=np.array([0.5, 0.25, 1.0], dtype=np.float32),
    )
    cloud = spatial.point_cloud(header(), points)
    assert cloud.header == header()
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("label", 12, PointField.UINT16, 1),
        ("confidence", 16, PointField.FLOAT32, 1),
    ]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (1, 3, 20, 60)
    assert not cloud.is_bigendian and cloud.is_dense and len(cloud.data) == 60
    # Read back as a PointCloud2 reader would: by the advertised offsets, little endian.
    raw = bytes(cloud.data)
    for index in range(3):
        base = index * cloud.point_step
        xyz = np.frombuffer(raw, "<f4", 3, base)
        np.testing.assert_array_equal(xyz, points.xyz[index])
        assert np.frombuffer(raw, "<u2", 1, base + 12)[0] == points.labels[index]
        assert np.frombuffer(raw, "<f4", 1, base + 16)[0] == points.confidence[index]


def test_objects_message_carries_each_region_and_its_depth_statistics() -> None:
    if spatial.SegmentedObjects is None:
        pytest.skip("zeroseg_ros.msg not built (scripts/setup.sh)")
    msg = spatial.objects_message(header(), REGIONS, LABELS, has_depth=True)
    assert msg.header == header() and msg.has_depth
    assert [(o.id, o.label_id, o.label) for o in msg.objects] == [(0, 1, "wall"), (1, 2, "box"), (2, 2, "box")]
    box = msg.objects[1]
    assert (box.box.x_offset, box.box.y_offset, box.box.width, box.box.height) == (20, 10, 8, 6)
    assert box.pixel_count == 48 and box.mean_confidence == pytest.approx(0.8)
    assert box.has_depth and (box.centroid.x, box.centroid.y, box.centroid.z) == (0.3, -0.1, 1.5)
    assert box.extents.x == pytest.approx(0.4) and box.valid_depth_fraction == 1.0
    far = msg.objects[2]
    assert not far.has_depth and far.valid_depth_fraction == 0.0


def test_markers_clear_everything_first_then_draw_a_box_and_a_label_per_3d_object() -> None:
    if spatial.MarkerArray is None:
        pytest.skip("visualization_msgs not installed (requirements/ros.txt)")
    markers = spatial.marker_array(header(), REGIONS, LABELS).markers
    assert markers[0].action == spatial.Marker.DELETEALL
    boxes = [m for m in markers if m.type == spatial.Marker.CUBE]
    texts = [m for m in markers if m.type == spatial.Marker.TEXT_VIEW_FACING]
    assert [m.id for m in boxes] == [0, 1] and [m.id for m in texts] == [0, 1]  # object 2 has no depth
    assert all(m.header == header() and m.action == spatial.Marker.ADD for m in boxes + texts)
    assert (boxes[1].pose.position.x, boxes[1].pose.position.z) == (0.3, 1.5)
    assert boxes[1].scale.z == spatial.MIN_MARKER_SIZE  # a flat face still shows
    assert texts[1].text == "box 0.80" and texts[1].pose.position.y < boxes[1].pose.position.y
    assert spatial.marker_array(header(), [], LABELS).markers[0].action == spatial.Marker.DELETEALL


def fake_vision_msgs() -> SimpleNamespace:
    """Classes with the fields of vision_msgs (Humble and later) that detection_arrays sets."""

    def point() -> SimpleNamespace:
        return SimpleNamespace(x=0.0, y=0.0, z=0.0)

    def pose() -> SimpleNamespace:
        return SimpleNamespace(position=point(), orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=0.0))

    def hypothesis() -> SimpleNamespace:
        return SimpleNamespace(
            hypothesis=SimpleNamespace(class_id="", score=0.0), pose=SimpleNamespace(pose=pose(), covariance=[])
        )

    def detection_2d(header=None, id="") -> SimpleNamespace:
        bbox = SimpleNamespace(center=SimpleNamespace(position=SimpleNamespace(x=0.0, y=0.0), theta=0.0))
        bbox.size_x = bbox.size_y = 0.0
        return SimpleNamespace(header=header, id=id, results=[], bbox=bbox)

    def detection_3d(header=None, id="") -> SimpleNamespace:
        return SimpleNamespace(header=header, id=id, results=[], bbox=SimpleNamespace(center=pose(), size=point()))

    return SimpleNamespace(
        Detection2DArray=lambda header=None: SimpleNamespace(header=header, detections=[]),
        Detection3DArray=lambda header=None: SimpleNamespace(header=header, detections=[]),
        Detection2D=detection_2d,
        Detection3D=detection_3d,
        ObjectHypothesisWithPose=hypothesis,
    )


def test_detections_give_2d_boxes_of_every_object_and_3d_boxes_of_those_with_depth() -> None:
    module = fake_vision_msgs()
    assert spatial.vision_detections_available(module)  # type: ignore[arg-type]
    array_2d, array_3d = spatial.detection_arrays(module, header(), REGIONS, LABELS, has_depth=True)  # type: ignore[arg-type]
    assert array_2d.header == header() and [d.id for d in array_2d.detections] == ["0", "1", "2"]
    box = array_2d.detections[1]
    assert (box.bbox.center.position.x, box.bbox.center.position.y, box.bbox.size_x, box.bbox.size_y) == (
        24.0,
        13.0,
        8.0,
        6.0,
    )
    assert (box.results[0].hypothesis.class_id, box.results[0].hypothesis.score) == ("box", pytest.approx(0.8))
    assert [d.id for d in array_3d.detections] == ["0", "1"]
    box_3d = array_3d.detections[1]
    centre = box_3d.bbox.center.position
    assert (centre.x, centre.y, centre.z) == (0.3, -0.1, 1.5) and box_3d.bbox.center.orientation.w == 1.0
    assert (box_3d.bbox.size.x, box_3d.bbox.size.y) == (0.4, 0.3)
    assert box_3d.results[0].pose.pose.position.z == 1.5
    _, without_depth = spatial.detection_arrays(module, header(), REGIONS, LABELS, has_depth=False)  # type: ignore[arg-type]
    assert without_depth is None
    assert not spatial.vision_detections_available(SimpleNamespace(Detection2DArray=object))  # type: ignore[arg-type]
    assert not spatial.vision_detections_available(None)


def test_stamp_buffer_pairs_exactly_or_with_the_nearest_within_the_tolerance() -> None:
    buffer: StampBuffer[str] = StampBuffer(capacity=3)
    assert buffer.nearest(100, 10).item is None and buffer.nearest(100, 10).offset_ns is None
    for stamp in (100, 200, 300, 400):
        buffer.add(stamp, f"depth {stamp}")
    assert buffer.nearest(300, 0).item == "depth 300"
    assert buffer.nearest(292, 10).item == "depth 300"
    assert buffer.nearest(251, 49).item == "depth 300" and buffer.nearest(249, 49).item == "depth 200"
    missed = buffer.nearest(350, 10)
    assert missed.item is None and missed.offset_ns == 50
    # Only the newest three are kept: 100 is gone.
    assert buffer.nearest(100, 50).item is None and buffer.nearest(100, 100).item == "depth 200"
    buffer.add(300, "depth 300 again")
    assert buffer.nearest(300, 0).item == "depth 300 again"  # a tie goes to the newer arrival
    buffer.drop_older_than(350)  # both 300s go, 400 stays
    assert buffer.nearest(300, 99).item is None and buffer.nearest(300, 100).item == "depth 400"
    for stamp in (500, 600, 700):  # the capacity still holds after a drop
        buffer.add(stamp, f"depth {stamp}")
    assert buffer.nearest(400, 0).item is None and buffer.nearest(500, 0).item == "depth 500"
    buffer.clear()
    assert buffer.nearest(300, 1000).item is None


def test_the_3d_rviz_layout_shows_the_points_and_markers_the_node_publishes() -> None:
    import yaml

    rviz = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "zeroseg_3d.rviz").read_text())
    displays = {d["Class"]: d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert displays == {
        "rviz_default_plugins/PointCloud2": "/zeroseg/points",
        "rviz_default_plugins/MarkerArray": "/zeroseg/objects/markers",
    }
    labelled = next(d for d in rviz["Visualization Manager"]["Displays"] if d["Class"].endswith("PointCloud2"))
    assert labelled["Channel Name"] in [name for name, _, _ in spatial.POINT_FIELDS]
    namespaces = set(next(d for d in rviz["Visualization Manager"]["Displays"] if "Namespaces" in d)["Namespaces"])
    markers = spatial.marker_array(header(), REGIONS, LABELS).markers
    assert namespaces == {m.ns for m in markers[1:]}


@pytest.mark.timeout(60)
def test_spatial_outputs_can_be_created_and_destroyed_again_as_a_lifecycle_node_would() -> None:
    import rclpy

    from zeroseg_ros.ros.params import PARAMETERS

    values = {spec.name: spec.default for spec in PARAMETERS} | {"use_depth": True}
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("spatial_lifecycle_probe", context=context)
        before = (len(list(node.subscriptions)), len(list(node.publishers)))
        for _ in range(2):
            outputs = spatial.SpatialOutputs(node, values, 5.0)
            topics = {name for name, _ in node.get_publisher_names_and_types_by_node(node.get_name(), "/")}
            assert {"/points", "/objects", "/objects/markers", "/heatmap"} <= topics
            assert len(list(node.subscriptions)) == before[0] + 2  # depth and camera_info
            assert outputs.diagnostic_values()["frames_without_depth"] == "0"
            outputs.destroy()
            assert (len(list(node.subscriptions)), len(list(node.publishers))) == before
        without_depth = spatial.SpatialOutputs(node, values | {"use_depth": False}, 5.0)
        assert without_depth.points_pub is None and without_depth.diagnostic_values() == {}
        assert len(list(node.subscriptions)) == before[0]
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
