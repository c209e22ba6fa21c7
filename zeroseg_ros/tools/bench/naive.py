"""The naive baseline the benchmark compares against: the dense-CLIP pipeline as a first sketch writes it.

Per frame it does what the seed article's sketch does, all in fp32:
  - PIL resize and torchvision ``ToTensor`` / ``Normalize`` on the host;
  - every query re-encoded with every prompt template (the full 77-token text transformer);
  - the full image model call, all blocks including the last, with MaskCLIP's value path taken from a hook on
    the last block's input (``out_proj(v)``, then ``ln_post`` and ``proj``);
  - similarity in numpy, per-class bilinear upsampling with PIL, softmax and argmax in numpy.

It uses the same template set, logit scale, threshold and model input size as the pipeline it is compared
with, so the two differ only in how the work is done. Its label map equals ours up to the rounding of PIL's
uint8 resize (and float summation order): the math is the same, which ``test/test_naive.py`` checks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.dense import interpolate_positional_embedding
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.model import load_clip
from zeroseg_ros.core.preprocess import target_size
from zeroseg_ros.core.queries import parse_queries
from zeroseg_ros.core.text import TEMPLATES


@dataclass
class NaiveResult:
    label_map: np.ndarray  # H x W uint8: 0 background (below the threshold), i = queries[i - 1]
    timings_ms: dict[str, float]


class NaivePipeline:
    """MaskCLIP done the simple way; see the module docstring. Only ``maskclip`` is implemented."""

    def __init__(self, model_config: ModelConfig, config: SegmenterConfig, queries: str) -> None:
        if config.background_words or config.slide_crop or config.pamr:
            raise ConfigError("the naive baseline has no background words, sliding windows or PAMR")
        self.config = config
        self.queries = parse_queries(queries)
        clip = load_clip(dataclasses.replace(model_config, precision="fp32"))
        self.model = clip.model
        self.tokenizer = clip.tokenizer
        self.device = clip.device
        self.templates = TEMPLATES[config.templates]
        self.patch = int(self.model.visual.conv1.kernel_size[0])
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(clip.mean, clip.std)])

    @torch.no_grad()
    def segment(self, image_rgb: np.ndarray) -> NaiveResult:
        timings: dict[str, float] = {}
        start = last = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal last
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            timings[stage] = (now - last) * 1000.0
            last = now

        height, width = image_rgb.shape[:2]
        pixels = self.preprocess(image_rgb)
        lap("preprocess")
        text = self.encode_text()
        lap("encode_text")
        features = self.encode_image(pixels)
        lap("encode_image")
        grid_h, grid_w, dims = features.shape
        logits = features.reshape(-1, dims) @ text.T  # (patches, phrases)
        logits = logits.reshape(grid_h, grid_w, -1)
        lap("similarity")
        label_map = self.postprocess(logits, height, width)
        lap("postprocess")
        timings["total"] = (last - start) * 1000.0
        return NaiveResult(label_map=label_map, timings_ms=timings)

    def preprocess(self, image_rgb: np.ndarray) -> torch.Tensor:
        """PIL bilinear resize to the model input size, then ``ToTensor`` and ``Normalize``."""
        height, width = image_rgb.shape[:2]
        size = target_size(height, width, self.config.short_side, self.patch)
        resized = Image.fromarray(image_rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return self.to_tensor(resized).unsqueeze(0).to(self.device)

    def encode_text(self) -> np.ndarray:
        """``(phrases, D)``: every synonym of every query, mean over the templates, recomputed each call."""
        rows = []
        for query in self.queries:
            for phrase in query.synonyms:
                tokens = self.tokenizer([template.format(phrase) for template in self.templates]).to(self.device)
                embedding = F.normalize(self.model.encode_text(tokens), dim=-1).mean(dim=0)
                rows.append(F.normalize(embedding, dim=0))
        return torch.stack(rows).cpu().numpy()

    def encode_image(self, pixels: torch.Tensor) -> np.ndarray:
        """``(gh, gw, D)`` unit MaskCLIP patch features, with the whole model run as it is."""
        visual = self.model.visual
        grid = (pixels.shape[-2] // self.patch, pixels.shape[-1] // self.patch)
        captured: list[torch.Tensor] = []
        last_block = visual.transformer.resblocks[-1]
        hook = last_block.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            x = visual.conv1(pixels).flatten(2).transpose(1, 2)
            x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
            x = x + interpolate_positional_embedding(visual.positional_embedding, tuple(visual.grid_size), grid)
            x = visual.transformer(visual.ln_pre(x))
            _ = visual.ln_post(x[:, 0]) @ visual.proj  # the image embedding the full call produces, unused
        finally:
            hook.remove()
        block_input = captured[0] if visual.transformer.batch_first else captured[0].transpose(0, 1)
        attn = last_block.attn
        width = attn.embed_dim
        values = F.linear(
            last_block.ln_1(block_input), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
        )
        tokens = visual.ln_post(attn.out_proj(values)) @ visual.proj
        patches = F.normalize(tokens[0, 1:], dim=-1)
        return patches.reshape(grid[0], grid[1], -1).cpu().numpy()

    def postprocess(self, logits: np.ndarray, height: int, width: int) -> np.ndarray:
        """Per-phrase PIL upsampling, softmax, best synonym per query, threshold and argmax, in numpy."""
        upsampled = np.stack(
            [
                np.asarray(Image.fromarray(logits[..., k], mode="F").resize((width, height), Image.Resampling.BILINEAR))
                for k in range(logits.shape[-1])
            ]
        )
        scaled = upsampled * self.config.logit_scale
        probabilities = np.exp(scaled - scaled.max(axis=0, keepdims=True))
        probabilities /= probabilities.sum(axis=0, keepdims=True)
        columns = np.repeat(np.arange(len(self.queries)), [len(q.synonyms) for q in self.queries])
        per_query = np.stack([probabilities[columns == index].max(axis=0) for index in range(len(self.queries))])
        label_map = per_query.argmax(axis=0).astype(np.uint8) + 1
        label_map[per_query.max(axis=0) < self.config.probability_threshold] = 0
        return label_map
