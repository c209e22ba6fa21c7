"""The text side: parsing queries, prompt templates and cached text embeddings.

Queries are parsed in ``queries.py``; a label is scored as the best of its synonyms. Each phrase is embedded as
the normalised mean of CLIP's text embeddings over a set of prompt templates, as the training-free methods do;
embeddings are cached by phrase, so a stream of frames with unchanged queries costs no text encoding, and
optionally on disk (``text_cache.py``), so a restart with the same vocabulary costs none either.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn

from zeroseg_ros.core.onednn import OneDNNLinear, residual_attention_block
from zeroseg_ros.core.progress import Progress
from zeroseg_ros.core.text_cache import DiskTextCache, text_tower_fingerprint
from zeroseg_ros.core.turns import CoreTurns

TEMPLATES: dict[str, tuple[str, ...]] = {
    # The 80 prompts of CLIP's ImageNet evaluation, used by MaskCLIP, SCLIP, ClearCLIP and NACLIP.
    "imagenet80": tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES),
    # A cheaper set for CPUs and frequent query changes.
    "short": (
        "a photo of a {}.",
        "a photo of the {}.",
        "a cropped photo of a {}.",
        "a photo of a small {}.",
        "a photo of a large {}.",
        "there is a {} in the scene.",
        "a bright photo of a {}.",
        "a dark photo of a {}.",
    ),
    "none": ("{}",),
}

TEXT_BATCH_SIZE = 256  # prompts per forward pass of the text tower


class TextEncoder:
    """Embeds phrases as the normalised mean over prompt templates, with an LRU cache keyed by phrase and, with
    ``disk_cache_dir``, a ``DiskTextCache`` there (keyed by ``model_name`` and the text tower's fingerprint,
    computed on the first ``encode``). ``hits`` count phrases found in memory, ``disk_hits`` on disk,
    ``misses`` those the network encoded. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        device: torch.device,
        templates: str = "imagenet80",
        cache_size: int = 4096,
        batch_size: int = TEXT_BATCH_SIZE,
        onednn: bool = False,
        disk_cache_dir: Path | None = None,
        model_name: str = "",
        turns: CoreTurns | None = None,
    ) -> None:
        self._model = model
        # Sizes and runs each batch (core/turns.py: on the thread of frames beside, in turns); default here.
        self._turns = turns or CoreTurns(enabled=False)
        self._onednn = OneDNNLinear() if onednn else None  # fp32 on the CPU only (onednn.py)
        self._tokenizer = tokenizer
        self._device = device
        self._templates = TEMPLATES[templates]
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._batch_size = batch_size
        self._disk_cache_dir = disk_cache_dir
        self._model_name = model_name
        self._disk_cache: DiskTextCache | None = None
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    @property
    def templates(self) -> tuple[str, ...]:
        return self._templates

    def set_templates(self, templates: str) -> None:
        """Switch the template set; cached embeddings of the old set are dropped."""
        if TEMPLATES[templates] != self._templates:
            self._templates = TEMPLATES[templates]
            self._cache.clear()

    @torch.inference_mode()
    def encode(self, phrases: Sequence[str], progress: Progress | None = None) -> torch.Tensor:
        """``(len(phrases), D)`` float32 unit vectors on the model's device. ``progress(done, total)`` is called
        after each batch of prompts that had to be encoded (the command line draws a bar, the node logs)."""
        missing = list(dict.fromkeys(p for p in phrases if p not in self._cache))
        self.hits += len(phrases) - len(missing)
        disk = self._disk() if missing else None
        if disk is not None:
            found = disk.lookup(self._templates, missing)
            self.disk_hits += len(found)
            for phrase, embedding in found.items():
                self._cache[phrase] = embedding.to(self._device)
            missing = [p for p in missing if p not in found]
        self.misses += len(missing)
        if missing:
            new = dict(zip(missing, self._embed(missing, progress), strict=True))
            self._cache.update(new)
            if disk is not None:
                disk.add(self._templates, new)
        for phrase in phrases:
            self._cache.move_to_end(phrase)
        embeddings = torch.stack([self._cache[p] for p in phrases])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return embeddings

    def _disk(self) -> DiskTextCache | None:
        if self._disk_cache is None and self._disk_cache_dir is not None:
            fingerprint = text_tower_fingerprint(self._model)
            self._disk_cache = DiskTextCache(self._disk_cache_dir, self._model_name, fingerprint)
        return self._disk_cache

    @torch.inference_mode()  # also where another thread runs it (core/turns.py)
    def _embed_batch(self, prompts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(prompts).to(self._device)  # type: ignore[operator]
        return F.normalize(encode_text_trimmed(self._model, tokens, self._onednn).float(), dim=-1)

    def _embed(self, phrases: list[str], progress: Progress | None = None) -> torch.Tensor:
        prompts = [template.format(phrase) for phrase in phrases for template in self._templates]
        chunks = []
        done = 0
        while done < len(prompts):
            batch = prompts[done : done + self._turns.text_batch_prompts(self._batch_size)]
            chunks.append(self._turns.text_batch(lambda batch=batch: self._embed_batch(batch), len(batch)))
            done += len(batch)
            if progress is not None:
                progress(done, len(prompts))
        per_template = torch.cat(chunks).reshape(len(phrases), len(self._templates), -1)
        return F.normalize(per_template.mean(dim=1), dim=-1)


def encode_text_trimmed(model: nn.Module, tokens: torch.Tensor, onednn: OneDNNLinear | None = None) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed on the tokens up to the longest prompt's end instead of all 77.

    CLIP's text transformer is causal and pools at the end-of-text token (the largest id), so positions after
    it never influence the result; prompts are ~15 tokens, so this is several times cheaper and exact.
    Models that pool differently, or are not open_clip's ``CLIP`` with its ``ResidualAttentionBlock``s, take
    their own ``encode_text``. The blocks run spelled out (``residual_attention_block``): the same results as
    ``nn.MultiheadAttention``'s fused path, without its fixed cost per call in bf16 on the CPU, which made small
    batches (those run between frames, core/turns.py) several times dearer per prompt. With ``onednn`` (fp32 on
    the CPU) the blocks' products run through oneDNN (``onednn.py``).
    """
    if (
        not isinstance(model, CLIP)
        or model.text_pool_type != "argmax"
        or model.attn_mask is None
        or not all(isinstance(block, ResidualAttentionBlock) for block in model.transformer.resblocks)
    ):
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length].to(cast_dtype)
    with onednn if onednn is not None else nullcontext():
        for block in model.transformer.resblocks:
            x = residual_attention_block(block, x, mask)
    x = model.ln_final(x)
    pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    return (
        pooled @ model.text_projection
        if not isinstance(model.text_projection, nn.Linear)
        else (model.text_projection(pooled))
    )
