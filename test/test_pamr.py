"""PAMR against a per-pixel reference implementation, and its basic properties."""

from __future__ import annotations

import itertools

import torch

from zeroseg_ros.core.pamr import pamr


def _clamp(value: int, size: int) -> int:
    return min(max(value, 0), size - 1)


def _reference_pamr(image, mask, iterations, dilations):
    """PAMR written pixel by pixel: affinities from locally standardised colour differences."""
    height, width = image.shape[-2:]
    offsets = [(dy, dx) for dy, dx in itertools.product((-1, 0, 1), repeat=2) if (dy, dx) != (0, 0)]
    weights = torch.zeros(height, width, len(offsets) * len(dilations))
    for y, x in itertools.product(range(height), range(width)):
        window = torch.stack(
            [
                image[0, :, _clamp(y + dy * d, height), _clamp(x + dx * d, width)]
                for d in dilations
                for dy, dx in [(0, 0), *offsets]
            ]
        )  # (9 * len(dilations), C)
        std = window.std(dim=0)
        logits = []
        for d in dilations:
            for dy, dx in offsets:
                neighbour = image[0, :, _clamp(y + dy * d, height), _clamp(x + dx * d, width)]
                logits.append((-(image[0, :, y, x] - neighbour).abs() / (1e-8 + 0.1 * std)).mean())
        weights[y, x] = torch.softmax(torch.stack(logits), dim=0)
    current = mask[0].clone()
    for _ in range(iterations):
        updated = torch.zeros_like(current)
        for y, x in itertools.product(range(height), range(width)):
            neighbours = torch.stack(
                [
                    current[:, _clamp(y + dy * d, height), _clamp(x + dx * d, width)]
                    for d in dilations
                    for dy, dx in offsets
                ]
            )
            updated[:, y, x] = (weights[y, x, :, None] * neighbours).sum(0)
        current = updated
    return current[None]


def test_pamr_matches_per_pixel_reference():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 6, 7, generator=generator)
    mask = torch.rand(1, 2, 6, 7, generator=generator)
    torch.testing.assert_close(pamr(image, mask, 3, (1, 2)), _reference_pamr(image, mask, 3, (1, 2)))


def test_pamr_keeps_a_constant_mask_and_shape():
    image = torch.rand(1, 3, 40, 50)
    mask = torch.full((1, 4, 40, 50), 0.25)
    refined = pamr(image, mask)
    assert refined.shape == mask.shape
    torch.testing.assert_close(refined, mask)


def test_pamr_snaps_a_blurred_mask_to_the_image_edge():
    image = torch.zeros(1, 3, 32, 32)
    image[..., 16:] = 1.0
    image += 0.01 * torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    truth = (image[:, :1] > 0.5).float()
    blurred = torch.nn.functional.avg_pool2d(truth, 9, stride=1, padding=4, count_include_pad=False)
    mask = torch.cat([1 - blurred, blurred], dim=1)
    refined = pamr(image, mask, iterations=10, dilations=(1, 2))
    error_before = (mask[:, 1] - truth[:, 0]).abs().mean()
    error_after = (refined[:, 1] - truth[:, 0]).abs().mean()
    # Without the image's edge the same smoothing only blurs: the gain comes from following the edge.
    flat = pamr(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)), mask, 10, (1, 2))
    error_flat = (flat[:, 1] - truth[:, 0]).abs().mean()
    assert error_after < 0.85 * error_before
    assert error_flat > error_before
