"""sensor_msgs/Image <-> numpy: every supported encoding, padded rows, byte order, malformed messages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.ros import image_codec
from zeroseg_ros.ros.image_codec import (
    ENCODINGS,
    array_to_image,
    compressed_to_segmenter_input,
    image_to_array,
    image_to_segmenter_input,
)

sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs (ros-sensor-msgs wheel) not installed")
Image = sensor_msgs.Image
CompressedImage = sensor_msgs.CompressedImage

HEIGHT, WIDTH = 5, 7


def random_pixels(encoding: str, rng: np.random.Generator) -> np.ndarray:
    info = image_codec.OUTPUT_ENCODINGS[encoding]
    shape = (HEIGHT, WIDTH) if info.channels == 1 else (HEIGHT, WIDTH, info.channels)
    if info.dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max + 1, size=shape, dtype=info.dtype)


def padded_message(pixels: np.ndarray, encoding: str, padding: int, big_endian: bool) -> Image:
    """Builds the message bytes by hand (not with the codec): each row followed by ``padding`` junk bytes."""
    order = ">" if big_endian else "<"
    row_bytes = pixels.reshape(pixels.shape[0], -1).astype(pixels.dtype.newbyteorder(order)).tobytes()
    row_len = len(row_bytes) // pixels.shape[0]
    junk = bytes([0xAB]) * padding
    data = b"".join(row_bytes[r * row_len : (r + 1) * row_len] + junk for r in range(pixels.shape[0]))
    msg = Image()
    msg.height, msg.width, msg.encoding = pixels.shape[0], pixels.shape[1], encoding
    msg.is_bigendian = int(big_endian)
    msg.step = row_len + padding
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding", [*ENCODINGS, "32FC1", "16UC1"])
@pytest.mark.parametrize("padding", [0, 3, 64])
@pytest.mark.parametrize("big_endian", [False, True])
def test_numpy_path_reads_every_encoding_with_padding_and_byte_order(
    encoding: str, padding: int, big_endian: bool
) -> None:
    pixels = random_pixels(encoding, np.random.default_rng(0))
    msg = padded_message(pixels, encoding, padding, big_endian)
    decoded = image_codec._numpy_image_to_array(msg, image_codec.OUTPUT_ENCODINGS[encoding])
    assert decoded.dtype == pixels.dtype
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("encoding", [*ENCODINGS, "32FC1", "16UC1"])
def test_array_to_image_round_trips(encoding: str) -> None:
    pixels = random_pixels(encoding, np.random.default_rng(1))
    header = sensor_msgs.Image().header
    header.frame_id = "camera_optical"
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image(pixels, encoding, Image, header)
    assert (msg.height, msg.width, msg.encoding) == (HEIGHT, WIDTH, encoding)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    assert msg.step * msg.height == len(msg.data)
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_rgb8_byte_layout_matches_the_ros_convention() -> None:
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.data = bytes(range(12))
    pixels = image_to_array(msg)
    # Row 1, column 0 starts at byte 1 * step + 0 * 3.
    assert pixels[1, 0].tolist() == [6, 7, 8]
    assert pixels[0, 1].tolist() == [3, 4, 5]


def test_segmenter_input_drops_alpha_and_keeps_channel_order() -> None:
    rng = np.random.default_rng(2)
    rgba = random_pixels("rgba8", rng)
    pixels, order = image_to_segmenter_input(array_to_image(rgba, "rgba8", Image))
    assert order == "rgb" and pixels.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(pixels, rgba[:, :, :3])
    bgra = random_pixels("bgra8", rng)
    pixels, order = image_to_segmenter_input(array_to_image(bgra, "bgra8", Image))
    assert order == "bgr"
    np.testing.assert_array_equal(pixels, bgra[:, :, :3])
    _, order = image_to_segmenter_input(array_to_image(random_pixels("8UC3", rng), "8UC3", Image))
    assert order == "bgr"


def test_mono16_is_scaled_by_the_frame_maximum() -> None:
    twelve_bit = np.array([[0, 2048, 4095]], dtype=np.uint16)
    pixels, order = image_to_segmenter_input(array_to_image(twelve_bit, "mono16", Image))
    assert order == "gray" and pixels.dtype == np.uint8
    assert pixels.tolist() == [[0, 128, 255]]


COLOUR = (200, 100, 50)  # R, G, B


def yuv_of(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 video-range Y, U, V of one RGB colour (what a camera's YUV output holds)."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


@pytest.mark.parametrize(
    ("encoding", "byte_order"),
    [("uyvy", "UYVY"), ("yuv422", "UYVY"), ("yuyv", "YUYV"), ("yuv422_yuy2", "YUYV")],
)
def test_packed_yuv422_becomes_rgb(encoding: str, byte_order: str) -> None:
    y, u, v = yuv_of(COLOUR)
    pair = bytes({"Y": y, "U": u, "V": v}[c] for c in byte_order)  # two pixels: 4 bytes
    msg = Image(height=4, width=6, encoding=encoding, step=12)
    msg.data = pair * (3 * 4)
    pixels, order = image_to_segmenter_input(msg)
    assert order == "rgb" and pixels.shape == (4, 6, 3)
    np.testing.assert_allclose(pixels.reshape(-1, 3), np.tile(COLOUR, (24, 1)), atol=4)
    msg.width, msg.step, msg.data = 5, 10, bytes(40)
    with pytest.raises(InvalidImageError, match="width must be even"):
        image_to_segmenter_input(msg)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_mosaics_become_rgb_with_each_pattern(pattern: str, bits: int) -> None:
    # A flat colour seen through the mosaic: each cell of the 2x2 pattern holds its own channel.
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros((8, 10), dtype=np.uint16 if bits == 16 else np.uint8)
    for index, letter in enumerate(pattern):
        mosaic[index // 2 :: 2, index % 2 :: 2] = COLOUR[channel[letter]] * (256 if bits == 16 else 1)
    pixels, order = image_to_segmenter_input(array_to_image(mosaic, f"bayer_{pattern}{bits}", Image))
    assert order == "rgb" and pixels.shape == (8, 10, 3) and pixels.dtype == np.uint8
    expected = np.array(COLOUR) * (255 / 200 if bits == 16 else 1)  # 16 bits: scaled by the frame's maximum
    np.testing.assert_allclose(pixels[2:-2, 2:-2].reshape(-1, 3), np.tile(expected, (24, 1)), atol=2)


def test_32fc1_is_not_a_camera_input() -> None:
    msg = array_to_image(np.zeros((2, 2), np.float32), "32FC1", Image)
    with pytest.raises(InvalidImageError, match="unsupported encoding '32FC1'"):
        image_to_segmenter_input(msg)


def make_message(**fields: object) -> Image:
    msg = Image(height=4, width=4, encoding="rgb8", step=12)
    msg.data = bytes(48)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoding": "nv21"}, "unsupported encoding 'nv21'"),
        ({"encoding": ""}, "unsupported encoding ''"),
        ({"height": 0, "data": b""}, r"image is empty \(4x0\)"),
        ({"width": 0}, r"image is empty \(0x4\)"),
        ({"step": 11}, "step 11 is shorter than one row"),
        ({"data": bytes(47)}, "data has 47 bytes, but step x height = 12 x 4 = 48"),
        ({"data": bytes(49)}, "data has 49 bytes"),
        ({"height": 100000, "width": 100000}, "over the limit"),
    ],
)
def test_malformed_images_are_refused_with_a_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        image_to_segmenter_input(make_message(**fields))


def test_max_pixels_limit_is_applied() -> None:
    with pytest.raises(InvalidImageError, match="16 pixels, over the limit of 15"):
        image_to_array(make_message(), max_pixels=15)
    assert image_to_array(make_message(), max_pixels=16).shape == (4, 4, 3)


def test_array_to_image_refuses_mismatched_arrays() -> None:
    with pytest.raises(InvalidImageError, match="cannot be encoded as rgb8"):
        array_to_image(np.zeros((2, 2), np.uint8), "rgb8", Image)
    with pytest.raises(InvalidImageError, match="dtype float32 cannot be encoded as mono8"):
        array_to_image(np.zeros((2, 2), np.float32), "mono8", Image)


def test_png_compressed_image_decodes_losslessly_as_bgr() -> None:
    bgr = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    msg = CompressedImage(format="png")
    msg.data = encoded.tobytes()
    pixels, order = compressed_to_segmenter_input(msg)
    assert order == "bgr"
    np.testing.assert_array_equal(pixels, bgr)


def test_jpeg_compressed_image_decodes_close_to_the_original() -> None:
    bgr = np.full((16, 16, 3), (10, 120, 240), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
    msg.data = encoded.tobytes()
    pixels, _ = compressed_to_segmenter_input(msg)
    assert np.abs(pixels.astype(int) - bgr.astype(int)).max() <= 3


@pytest.mark.parametrize(
    ("image_format", "data", "message"),
    [
        ("bmp", b"BM....", "unsupported compressed format 'bmp'"),
        ("jpeg", b"", "has no data"),
        ("jpeg", b"\xff\xd8 not really a jpeg", "could not be decoded"),
    ],
)
def test_bad_compressed_images_are_refused(image_format: str, data: bytes, message: str) -> None:
    msg = CompressedImage(format=image_format)
    msg.data = data
    with pytest.raises(InvalidImageError, match=message):
        compressed_to_segmenter_input(msg)


@pytest.mark.skipif(not image_codec.bridge_available(), reason="cv_bridge is not importable (no ROS 2 apt install)")
@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("padding", [0, 5])
def test_cv_bridge_and_numpy_paths_agree(encoding: str, padding: int) -> None:
    pixels = random_pixels(encoding, np.random.default_rng(4))
    msg = padded_message(pixels, encoding, padding, big_endian=False)
    numpy_pixels = image_codec._numpy_image_to_array(msg, ENCODINGS[encoding])
    bridge_pixels = image_to_array(msg)
    np.testing.assert_array_equal(bridge_pixels, numpy_pixels)
