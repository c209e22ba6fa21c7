"""From a uint8 camera frame to CLIP's normalised input, on the target device.

The frame is checked, uploaded once as uint8 (through a reused pinned buffer on CUDA, so the copy is
asynchronous and four times smaller than a float upload), then resized and normalised on the device. There
is no PIL round trip: resizing is a bilinear, antialiased ``interpolate`` of the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zeroseg_ros.core.errors import InvalidImageError

CHANNEL_ORDERS = ("rgb", "bgr")
# As mmseg's Resize(scale=(2048, short_side), keep_ratio=True) of the reference methods: a thin strip of an
# image is not blown up without bound.
MAX_LONG_SIDE = 2048


def check_image(image: object, max_pixels: int) -> np.ndarray:
    """Return ``image`` as an ``H x W x 3`` uint8 array, or raise ``InvalidImageError`` saying why not.

    A ``H x W`` (or ``H x W x 1``) grey image is accepted and repeated to three channels.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must be uint8, got {image.dtype}; scale it to 0-255 first")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"image must be H x W x 3 (or H x W grey), got shape {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise InvalidImageError(f"image is empty ({height} x {width})")
    if height * width > max_pixels:
        raise InvalidImageError(
            f"image of {width} x {height} = {height * width} pixels exceeds the limit of {max_pixels} pixels"
        )
    return image


def target_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """The size the model sees: the short side scaled to ``short_side`` (0 keeps it) unless that takes the long
    side past ``MAX_LONG_SIDE``, aspect ratio kept, each side rounded to a multiple of the patch size (at least
    one patch) so no border pixels are dropped."""
    scale = 1.0 if short_side == 0 else min(short_side / min(height, width), MAX_LONG_SIDE / max(height, width))
    return (
        max(multiple, round(height * scale / multiple) * multiple),
        max(multiple, round(width * scale / multiple) * multiple),
    )


class FrameUploader:
    """Uploads uint8 frames to the device unchanged, through a reused pinned buffer on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned: torch.Tensor | None = None

    def __call__(self, image: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """One ``H x W x 3`` frame on the device; copied into ``out`` (a static CUDA-graph input) when given."""
        uploaded = self.batch([image], None if out is None else out[None])
        return uploaded[0] if out is None else out

    def batch(self, images: Sequence[np.ndarray], out: torch.Tensor | None = None) -> torch.Tensor:
        """Frames of one size as one ``B x H x W x 3`` tensor on the device, in one host-to-device copy;
        copied into ``out`` when given."""
        # Frames wrapped around a ROS message buffer are read-only; torch only wraps writable memory.
        arrays = [
            image if image.flags.writeable and image.flags.c_contiguous else np.array(image, order="C")
            for image in images
        ]
        if self.device.type == "cuda":
            shape = (len(arrays), *arrays[0].shape)
            if self._pinned is None or tuple(self._pinned.shape) != shape:
                self._pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            for slot, array in zip(self._pinned, arrays, strict=True):
                slot.copy_(torch.from_numpy(array))
            host = self._pinned
        elif len(arrays) == 1:
            host = torch.from_numpy(arrays[0])[None]  # no copy for a single frame
        else:
            host = torch.from_numpy(np.stack(arrays))
        if out is not None:
            return out.copy_(host, non_blocking=True)
        return host.to(self.device, non_blocking=True)


def channel_index(bgr: bool, device: torch.device) -> torch.Tensor:
    """Indices that put a frame's channels in RGB order, and an RGB palette in the frame's order. A tensor, not
    a flag: a recorded CUDA graph then serves rgb and bgr frames alike."""
    return torch.tensor([2, 1, 0] if bgr else [0, 1, 2], device=device)


class Normaliser:
    """Turns ``H x W x 3`` uint8 frames on the device into CLIP's ``(B, 3, h, w)`` input of a given size."""

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        # Constants live on the device once: no host-to-device copy per frame (and none in a CUDA graph).
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self._dtype = dtype

    def __call__(
        self, frames: torch.Tensor, size: tuple[int, int], channels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``frames``: one ``H x W x 3`` frame or a ``B x H x W x 3`` batch; ``channels``: ``channel_index`` of
        their order, ``(3,)`` for all or ``(B, 3)`` per frame (None: RGB)."""
        pixels = (frames if frames.ndim == 4 else frames[None]).permute(0, 3, 1, 2).float()
        if channels is not None and channels.ndim == 1:
            pixels = pixels.index_select(1, channels)
        elif channels is not None:
            pixels = pixels.gather(1, channels[:, :, None, None].expand(-1, -1, *pixels.shape[-2:]))
        if tuple(pixels.shape[-2:]) != tuple(size):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        return ((pixels - self._mean) / self._std).to(self._dtype)
