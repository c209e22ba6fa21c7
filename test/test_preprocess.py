"""Frame checks, target sizes and on-device normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.preprocess import FrameUploader, Normaliser, channel_index, check_image, target_size

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def test_check_image_accepts_colour_and_grey():
    colour = np.zeros((4, 5, 3), dtype=np.uint8)
    assert check_image(colour, 100) is colour
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    expanded = check_image(grey, 100)
    assert expanded.shape == (4, 5, 3) and (expanded[:, :, 2] == grey).all()
    assert check_image(grey[:, :, None], 100).shape == (4, 5, 3)


def test_check_image_refuses_oversized_frames():
    with pytest.raises(InvalidImageError, match="exceeds"):
        check_image(np.zeros((11, 10, 3), dtype=np.uint8), 100)


@pytest.mark.parametrize(
    ("size", "short_side", "expected"),
    [
        ((480, 640), 448, (448, 592)),
        ((720, 1280), 224, (224, 400)),
        ((100, 100), 0, (96, 96)),
        ((5, 900), 448, (16, 2048)),
    ],
)
def test_target_size_keeps_aspect_and_rounds_to_patches(size, short_side, expected):
    assert target_size(*size, short_side, 16) == expected


def test_normaliser_matches_the_formula_and_flips_bgr():
    frame = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8))
    normalise = Normaliser(MEAN, STD, torch.device("cpu"), torch.float32)
    pixels = normalise(frame, (8, 6))
    expected = (frame.permute(2, 0, 1).float() / 255.0 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[
        :, None, None
    ]
    torch.testing.assert_close(pixels[0], expected, rtol=1e-5, atol=1e-5)
    bgr = channel_index(True, torch.device("cpu"))
    torch.testing.assert_close(normalise(frame.flip(-1), (8, 6), bgr), pixels)
    torch.testing.assert_close(normalise(frame, (8, 6), channel_index(False, torch.device("cpu"))), pixels)
    assert normalise(frame, (4, 3)).shape == (1, 3, 4, 3)


def test_uploader_copies_into_a_given_buffer():
    upload = FrameUploader(torch.device("cpu"))
    image = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    buffer = torch.zeros(4, 5, 3, dtype=torch.uint8)
    assert upload(image, out=buffer) is buffer
    assert (buffer.numpy() == image).all()
    assert (upload(image[:, ::-1]).numpy() == image[:, ::-1]).all()  # non-contiguous views are fine


def test_uploader_stacks_a_batch_and_the_normaliser_takes_an_order_per_frame():
    images = [np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8) for seed in (2, 3)]
    frames = FrameUploader(torch.device("cpu")).batch([images[0], images[1][:, ::-1]])
    assert frames.shape == (2, 4, 5, 3)
    assert (frames[1].numpy() == images[1][:, ::-1]).all()
    normalise = Normaliser(MEAN, STD, torch.device("cpu"), torch.float32)
    cpu = torch.device("cpu")
    channels = torch.stack([channel_index(False, cpu), channel_index(True, cpu)])
    pixels = normalise(frames, (4, 5), channels)
    torch.testing.assert_close(pixels[0:1], normalise(frames[0], (4, 5)))
    torch.testing.assert_close(pixels[1:2], normalise(frames[1], (4, 5), channel_index(True, cpu)))


def test_uploader_takes_read_only_frames_without_warning():
    image = np.frombuffer(bytes(range(60)), dtype=np.uint8).reshape(4, 5, 3)
    assert not image.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uploaded = FrameUploader(torch.device("cpu"))(image)
    assert (uploaded.numpy() == image).all()
