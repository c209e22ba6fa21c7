"""sensor_msgs/Image and CompressedImage <-> numpy, with every check a camera driver's message can fail.

cv_bridge is used when it is importable (real ROS 2 installs); a numpy conversion does the same where it is
not (ROS 2 from PyPI wheels). Both read the message's ``step`` (row padding) and ``is_bigendian``, and both
are checked against each other by the tests. Any malformed message raises ``InvalidImageError`` naming what
is wrong, so the node can log it and go on with the next frame.

The message types are only used through their attributes here, so this module imports no ROS package
unless cv_bridge is present.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.geometry import DEPTH_SCALES, DepthImage

JPEG_QUALITY = 90  # compressed overlays, for remote viewing

try:  # cv_bridge exists on real ROS 2 installs, not as a PyPI wheel.
    from cv_bridge import CvBridge

    _BRIDGE: Any = CvBridge()
except ImportError:
    _BRIDGE = None


@dataclass(frozen=True)
class EncodingInfo:
    """What one pixel of a sensor_msgs/Image encoding is."""

    dtype: np.dtype
    channels: int
    channel_order: str  # "rgb", "bgr" or "gray": how the segmenter must read the colour channels
    to_rgb: int | None = None  # OpenCV conversion to RGB for raw encodings (packed YUV, Bayer mosaics)


_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(_U8, 3, "rgb"),
    "bgr8": EncodingInfo(_U8, 3, "bgr"),
    "rgba8": EncodingInfo(_U8, 4, "rgb"),
    "bgra8": EncodingInfo(_U8, 4, "bgr"),
    "mono8": EncodingInfo(_U8, 1, "gray"),
    "mono16": EncodingInfo(_U16, 1, "gray"),
    # OpenCV's generic 3-channel type: OpenCV (and so cv_bridge users) store colour as BGR.
    "8UC3": EncodingInfo(_U8, 3, "bgr"),
    # Packed YUV 4:2:2 of USB and V4L2 cameras; "yuv422" and "yuv422_yuy2" are the older names of the same.
    "uyvy": EncodingInfo(_U8, 2, "rgb", cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": EncodingInfo(_U8, 2, "rgb", cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": EncodingInfo(_U8, 2, "rgb", cv2.COLOR_YUV2RGB_YUYV),
    "yuv422_yuy2": EncodingInfo(_U8, 2, "rgb", cv2.COLOR_YUV2RGB_YUYV),
    # Raw Bayer mosaics, named by their top-left 2x2 cell. OpenCV names a pattern by the cell that starts at
    # the second row and column, hence RGGB -> "BayerBG" (as cv_bridge maps them).
    **{
        f"bayer_{pattern}{bits}": EncodingInfo(dtype, 1, "rgb", code)
        for pattern, code in (
            ("rggb", cv2.COLOR_BayerBG2RGB),
            ("bggr", cv2.COLOR_BayerRG2RGB),
            ("gbrg", cv2.COLOR_BayerGR2RGB),
            ("grbg", cv2.COLOR_BayerGB2RGB),
        )
        for bits, dtype in (("8", _U8), ("16", _U16))
    },
}
# Encodings the node publishes or reads as depth (REP 118: 16UC1 millimetres, 32FC1 metres) but does not accept
# as camera input.
OUTPUT_ENCODINGS: dict[str, EncodingInfo] = {
    **ENCODINGS,
    "32FC1": EncodingInfo(np.dtype(np.float32), 1, "gray"),
    "16UC1": EncodingInfo(_U16, 1, "gray"),
}
INPUT_ENCODINGS = tuple(ENCODINGS)
COMPRESSED_FORMATS = ("jpeg", "png")


class ImageLike(Protocol):
    """The fields of sensor_msgs/Image this module reads (any object with them will do)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


class CompressedImageLike(Protocol):
    format: str
    data: Any


def bridge_available() -> bool:
    """True when cv_bridge is importable and used for the conversions."""
    return _BRIDGE is not None


def _check_layout(msg: ImageLike, info: EncodingInfo, max_pixels: int) -> None:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"image is empty ({width}x{height})")
    if height * width > max_pixels:
        raise InvalidImageError(
            f"image {width}x{height} has {width * height} pixels, over the limit of {max_pixels} (max_pixels)"
        )
    row_bytes = width * info.channels * info.dtype.itemsize
    if step < row_bytes:
        raise InvalidImageError(
            f"step {step} is shorter than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)"
        )
    if len(msg.data) != step * height:
        raise InvalidImageError(
            f"data has {len(msg.data)} bytes, but step x height = {step} x {height} = {step * height}"
        )


def _encoding_info(encoding: str, table: dict[str, EncodingInfo]) -> EncodingInfo:
    info = table.get(encoding)
    if info is None:
        raise InvalidImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(table)}")
    return info


def image_to_array(msg: ImageLike, max_pixels: int = 8192 * 8192) -> np.ndarray:
    """The pixels of a sensor_msgs/Image: HxW (one channel) or HxWxC, native byte order, no row padding.

    Raises InvalidImageError for an unsupported encoding, an empty or too large image, or a data length that
    does not match width, height and step.
    """
    info = _encoding_info(msg.encoding, OUTPUT_ENCODINGS)
    _check_layout(msg, info, max_pixels)
    if _BRIDGE is not None and info.to_rgb is None:  # older cv_bridge releases lack "uyvy", "yuyv" and such
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    return _numpy_image_to_array(msg, info)


class DepthEncodingError(InvalidImageError):
    """A depth image whose encoding is no depth encoding of REP 118."""


def depth_image(msg: ImageLike, max_pixels: int = 8192 * 8192) -> DepthImage:
    """A registered depth image (``16UC1`` millimetres or ``32FC1`` metres, REP 118) as received.

    Raises DepthEncodingError for another encoding, InvalidImageError for a layout ``image_to_array`` refuses.
    """
    if msg.encoding not in DEPTH_SCALES:
        raise DepthEncodingError(f"encoding must be {' or '.join(DEPTH_SCALES)} (REP 118), got {msg.encoding!r}")
    return DepthImage(image_to_array(msg, max_pixels), msg.encoding)


def _numpy_image_to_array(msg: ImageLike, info: EncodingInfo) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * info.channels * info.dtype.itemsize
    rows = np.frombuffer(msg.data, dtype=np.uint8)
    rows = rows.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(info.dtype, copy=False)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    return np.ascontiguousarray(pixels.reshape(shape))


def image_to_segmenter_input(msg: ImageLike, max_pixels: int = 8192 * 8192) -> tuple[np.ndarray, str]:
    """A camera image as the segmenter takes it: (HxWx3 uint8, "rgb"|"bgr") or (HxW uint8, "gray").

    Alpha is dropped; 16-bit images (mono16, 16-bit Bayer) are scaled to 8 bits by the frame's own maximum
    (12- and 16-bit sensors alike); packed YUV and Bayer mosaics are converted to RGB.
    """
    info = _encoding_info(msg.encoding, ENCODINGS)
    pixels = image_to_array(msg, max_pixels)
    if info.channels == 4:
        pixels = np.ascontiguousarray(pixels[:, :, :3])
    if pixels.dtype == np.uint16:
        peak = max(int(pixels.max()), 1)
        pixels = (pixels.astype(np.float32) * (255.0 / peak)).round().astype(np.uint8)
    if info.to_rgb is not None:
        pixels = _raw_to_rgb(pixels, msg.encoding, info.to_rgb)
    return pixels, info.channel_order


def _raw_to_rgb(pixels: np.ndarray, encoding: str, code: int) -> np.ndarray:
    """Packed YUV 4:2:2 (two pixels share one U and V) or a Bayer mosaic (a 2x2 cell per colour) to RGB."""
    height, width = pixels.shape[:2]
    if encoding.startswith("bayer_") and (height < 2 or width < 2):
        raise InvalidImageError(f"a {encoding} image needs at least 2x2 pixels, got {width}x{height}")
    if not encoding.startswith("bayer_") and width % 2:
        raise InvalidImageError(f"{encoding} packs pixel pairs: its width must be even, got {width}")
    return cv2.cvtColor(pixels, code)


def compressed_to_segmenter_input(msg: CompressedImageLike, max_pixels: int = 8192 * 8192) -> tuple[np.ndarray, str]:
    """Decodes a jpeg/png sensor_msgs/CompressedImage to (HxWx3 uint8, "bgr")."""
    image_format = str(msg.format).lower()
    if not any(name in image_format for name in COMPRESSED_FORMATS):
        raise InvalidImageError(f"unsupported compressed format {msg.format!r}; supported: jpeg, png")
    data = bytes(msg.data)
    if not data:
        raise InvalidImageError("compressed image has no data")
    undecodable = f"compressed image ({msg.format!r}, {len(data)} bytes) could not be decoded"
    try:  # the size from the header, so that an oversized frame is refused before it is decoded
        width, height = compressed_size(data)
    except ValueError as error:
        raise InvalidImageError(f"{undecodable}: {error}") from error
    if height * width > max_pixels:
        raise InvalidImageError(
            f"image {width}x{height} has {width * height} pixels, over the limit of {max_pixels} (max_pixels)"
        )
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InvalidImageError(undecodable)
    return decoded, "bgr"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless...): 0xC0-0xCF but DHT (C4), JPG (C8) and DAC (CC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


def compressed_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG (its IHDR chunk) or JPEG (its start-of-frame segment), read from the header
    without decoding; ``ValueError`` saying why when the header does not give it."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG without an IHDR chunk")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("neither a PNG nor a JPEG signature")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _JPEG_FRAME_MARKERS:
            if length < 7 or position + 9 > len(data):
                raise ValueError("JPEG frame header cut short")
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            if height == 0 or width == 0:
                raise ValueError(f"JPEG frame header gives a {width}x{height} size")
            return width, height
        position += 2 + length
    raise ValueError("JPEG without a frame header")


def image_fields(pixels: np.ndarray, encoding: str) -> dict[str, Any]:
    """The sensor_msgs/Image fields (all but the header) that hold ``pixels`` in ``encoding``, rows unpadded in
    native byte order (as cv_bridge writes them); for any message library's Image type."""
    info = _encoding_info(encoding, OUTPUT_ENCODINGS)
    expected_ndim = 2 if info.channels == 1 else 3
    if pixels.ndim != expected_ndim or (expected_ndim == 3 and pixels.shape[2] != info.channels):
        raise InvalidImageError(f"array of shape {pixels.shape} cannot be encoded as {encoding}")
    if pixels.dtype != info.dtype:
        raise InvalidImageError(f"array of dtype {pixels.dtype} cannot be encoded as {encoding} ({info.dtype})")
    return {
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "encoding": encoding,
        "is_bigendian": 1 if sys.byteorder == "big" else 0,
        "step": int(pixels.shape[1] * info.channels * info.dtype.itemsize),
        "data": np.ascontiguousarray(pixels).tobytes(),
    }


def mask_encoding(label_map: np.ndarray) -> str:
    """The encoding of a label mask: mono8, or mono16 past 255 labels."""
    return "mono8" if label_map.dtype == np.uint8 else "mono16"


def mask_png(label_map: np.ndarray) -> tuple[bytes, str]:
    """A label mask as a lossless PNG: sensor_msgs/CompressedImage ``data`` and its image_transport ``format``."""
    encoding = mask_encoding(label_map)
    return cv2.imencode(".png", label_map)[1].tobytes(), f"{encoding}; png compressed {encoding}"


def overlay_jpeg(overlay: np.ndarray, channel_order: str) -> tuple[bytes, str]:
    """An ``rgb`` or ``bgr`` overlay as a JPEG of quality ``JPEG_QUALITY``: sensor_msgs/CompressedImage ``data``
    and its image_transport ``format`` (the raw image's encoding, then the compressed one)."""
    bgr = overlay if channel_order == "bgr" else np.ascontiguousarray(overlay[:, :, ::-1])
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
    return jpeg, f"{colour_encoding(channel_order)}; jpeg compressed bgr8"


def colour_encoding(channel_order: str) -> str:
    """The sensor_msgs encoding of an image in ``channel_order``: bgr8 for ``bgr``, rgb8 otherwise."""
    return "bgr8" if channel_order == "bgr" else "rgb8"


def array_to_image(pixels: np.ndarray, encoding: str, msg_type: type, header: Any = None) -> Any:
    """A ``msg_type`` (sensor_msgs/Image) holding ``pixels`` in ``encoding``, with ``header`` copied in."""
    fields = image_fields(pixels, encoding)
    if _BRIDGE is not None:
        msg = _BRIDGE.cv2_to_imgmsg(np.ascontiguousarray(pixels), encoding=encoding)
    else:
        msg = msg_type()
        for name, value in fields.items():
            setattr(msg, name, value)
    if header is not None:
        msg.header = header
    return msg
