"""Text embeddings kept on disk between runs, so a restart with the same vocabulary needs no text encoding.

One ``.npz`` file per text tower and template set, named by a hash of its key: the model name, a fingerprint
of the text tower (its module structure, which names the activation, and every parameter's bytes: other
weights, another activation or another precision give another key) and the templates. The file repeats its
key and is used only when that matches, so a cache of another model or other weights is never read. A file
that cannot be read is ignored with a warning and rewritten on the next save; a directory that cannot be
written is warned about once and the cache then stays in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

LOGGER = logging.getLogger(__name__)

MAX_PHRASES_PER_FILE = 20000  # about 40 MB at 512 dimensions; the oldest phrases go first
_FORMAT = "zeroseg text embeddings v1"


def resolve_cache_dir(setting: str) -> Path | None:
    """``ModelConfig.text_cache`` as a directory: ``"auto"`` is ``$XDG_CACHE_HOME/zeroseg_ros`` (default
    ``~/.cache/zeroseg_ros``), ``""`` is None (no disk cache), anything else a path (``~`` expanded)."""
    if not setting:
        return None
    if setting == "auto":
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "zeroseg_ros"
    return Path(setting).expanduser()


def text_tower_fingerprint(model: nn.Module) -> str:
    """A hash of everything of ``model`` outside its image tower (``visual``): module structure and the bytes
    of every parameter and buffer."""
    digest = hashlib.sha256()  # CPUs with SHA instructions hash it faster than BLAKE2 or MD5 (docs/benchmarks.md)
    for name, module in model.named_children():
        if name != "visual":
            digest.update(repr(module).encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name.startswith("visual."):
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().data if data.numel() else b"")
    return digest.hexdigest()[:40]


class DiskTextCache:
    """Phrase -> unit embedding for one text tower, one file per template set, under ``directory``.

    ``fingerprint`` is the text tower's (``text_tower_fingerprint``); ``model_name`` only makes the key
    readable. Not thread-safe: ``TextEncoder`` calls it from one thread at a time.
    """

    def __init__(self, directory: Path, model_name: str, fingerprint: str) -> None:
        self.directory = directory
        self._model_name = model_name
        self._fingerprint = fingerprint
        self._loaded: dict[str, dict[str, np.ndarray]] = {}  # file name -> its phrases, in insertion order
        self._writable = True

    def _key(self, templates: Sequence[str]) -> str:
        templates_hash = hashlib.sha256("\n".join(templates).encode()).hexdigest()[:16]
        return f"{_FORMAT}; model {self._model_name}; text tower {self._fingerprint}; templates {templates_hash}"

    def _file(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"

    def _entries(self, templates: Sequence[str]) -> tuple[str, dict[str, np.ndarray]]:
        key = self._key(templates)
        path = self._file(key)
        if path.name not in self._loaded:
            self._loaded[path.name] = self._read(path, key)
        return key, self._loaded[path.name]

    @staticmethod
    def _read(path: Path, key: str) -> dict[str, np.ndarray]:
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key, phrases, embeddings = str(data["key"]), data["phrases"], data["embeddings"]
            if stored_key != key:
                raise ValueError("it belongs to another model, weights or template set")
            if embeddings.ndim != 2 or len(phrases) != len(embeddings) or embeddings.dtype != np.float32:
                raise ValueError(f"phrases {phrases.shape} and embeddings {embeddings.shape} do not match")
            return {str(phrase): row for phrase, row in zip(phrases, embeddings, strict=True)}
        except Exception as error:  # a torn or foreign file must never stop the node: ignore it, rewrite later
            LOGGER.warning("ignoring the unreadable text embedding cache %s (%s); it will be rewritten", path, error)
            return {}

    def lookup(self, templates: Sequence[str], phrases: Iterable[str]) -> dict[str, torch.Tensor]:
        """The cached embeddings (float32, CPU) of those ``phrases`` that are on disk."""
        _, entries = self._entries(templates)
        return {p: torch.from_numpy(entries[p].copy()) for p in phrases if p in entries}

    def add(self, templates: Sequence[str], embeddings: dict[str, torch.Tensor]) -> None:
        """Store new embeddings and rewrite the file (atomically: a reader sees the old or the new one)."""
        key, entries = self._entries(templates)
        for phrase, embedding in embeddings.items():
            entries.pop(phrase, None)
            entries[phrase] = embedding.detach().float().cpu().numpy()
        while len(entries) > MAX_PHRASES_PER_FILE:
            del entries[next(iter(entries))]
        if not self._writable or not entries:
            return
        temporary: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as handle:
                temporary = handle.name
                np.savez(
                    handle,
                    key=np.array(key),
                    phrases=np.array(list(entries)),
                    embeddings=np.stack(list(entries.values())).astype(np.float32),
                )
            os.replace(temporary, self._file(key))
        except OSError as error:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            self._writable = False
            LOGGER.warning("cannot write the text embedding cache in %s (%s); kept in memory", self.directory, error)
