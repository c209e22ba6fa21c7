"""The on-disk text embedding cache: hits across encoders, never another model's or template set's, corrupt and
unwritable files survived, the default location, and no disk cache for random weights."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import pytest
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.text import TextEncoder
from zeroseg_ros.core.text_cache import resolve_cache_dir, text_tower_fingerprint

PHRASES = ["cat", "traffic cone"]


@pytest.fixture(scope="module")
def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-16")


def _encoder(model, tokenizer, directory: Path, templates: str = "none", name: str = "ViT-B-16") -> TextEncoder:
    return TextEncoder(model, tokenizer, torch.device("cpu"), templates, disk_cache_dir=directory, model_name=name)


def test_a_new_encoder_reads_the_embeddings_from_disk_instead_of_encoding(vit_b16, tokenizer, tmp_path):
    first = _encoder(vit_b16, tokenizer, tmp_path)
    encoded = first.encode(PHRASES)
    assert (first.misses, first.disk_hits) == (2, 0)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    restarted = _encoder(vit_b16, tokenizer, tmp_path)
    cached = restarted.encode([*PHRASES, "dog"])
    assert (restarted.disk_hits, restarted.misses) == (2, 1)  # only the new phrase is encoded
    torch.testing.assert_close(cached[:2], encoded, rtol=0, atol=0)

    again = _encoder(vit_b16, tokenizer, tmp_path)
    again.encode(["dog"])
    assert (again.disk_hits, again.misses) == (1, 0)  # the later phrase was added to the file


def test_other_weights_another_model_name_or_template_set_never_use_the_cache(vit_b16, tokenizer, tmp_path):
    _encoder(vit_b16, tokenizer, tmp_path).encode(PHRASES)
    other_weights = copy.deepcopy(vit_b16)
    with torch.no_grad():
        other_weights.token_embedding.weight[0, 0] += 1.0
    for encoder in (
        _encoder(other_weights, tokenizer, tmp_path),
        _encoder(vit_b16, tokenizer, tmp_path, name="ViT-B-16-quickgelu"),
        _encoder(vit_b16, tokenizer, tmp_path, templates="short"),
    ):
        encoder.encode(PHRASES)
        assert (encoder.disk_hits, encoder.misses) == (0, 2)
    assert len(list(tmp_path.glob("*.npz"))) == 4  # one file each, none overwrote another


def test_the_fingerprint_follows_the_text_tower_only(vit_b16):
    reference = text_tower_fingerprint(vit_b16)
    changed = copy.deepcopy(vit_b16)
    with torch.no_grad():
        changed.visual.conv1.weight.zero_()
    assert text_tower_fingerprint(changed) == reference  # the image tower does not matter
    from open_clip.transformer import QuickGELU

    for block in changed.transformer.resblocks:
        block.mlp.gelu = QuickGELU()
    assert text_tower_fingerprint(changed) != reference  # the same weights under another activation
    changed = copy.deepcopy(vit_b16)
    with torch.no_grad():
        changed.ln_final.weight[3] += 1e-3
    assert text_tower_fingerprint(changed) != reference


@pytest.mark.parametrize("damage", [b"", b"not a zip file", "truncate"])
def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_rewritten(vit_b16, tokenizer, tmp_path, caplog, damage):
    expected = _encoder(vit_b16, tokenizer, tmp_path).encode(PHRASES)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100] if damage == "truncate" else damage)

    with caplog.at_level(logging.WARNING, logger="zeroseg_ros.core.text_cache"):
        encoder = _encoder(vit_b16, tokenizer, tmp_path)
        torch.testing.assert_close(encoder.encode(PHRASES), expected)
    assert (encoder.disk_hits, encoder.misses) == (0, 2)
    assert "ignoring the unreadable text embedding cache" in caplog.text

    rewritten = _encoder(vit_b16, tokenizer, tmp_path)
    rewritten.encode(PHRASES)
    assert rewritten.disk_hits == 2


def test_an_unwritable_cache_directory_keeps_the_cache_in_memory(vit_b16, tokenizer, tmp_path, caplog):
    blocked = tmp_path / "a file, not a directory"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger="zeroseg_ros.core.text_cache"):
        encoder = _encoder(vit_b16, tokenizer, blocked)
        encoder.encode(PHRASES)
        encoder.encode(PHRASES)
    assert (encoder.misses, encoder.hits) == (2, 2)
    assert "cannot write the text embedding cache" in caplog.text


def test_the_cache_location_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert resolve_cache_dir("auto") == tmp_path / "zeroseg_ros"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir("auto") == tmp_path / "home" / ".cache" / "zeroseg_ros"
    assert resolve_cache_dir("~/embeddings") == tmp_path / "home" / "embeddings"
    assert resolve_cache_dir("") is None
    assert ModelConfig().text_cache == "auto"


def test_random_weights_are_never_cached_on_disk(tmp_path):
    model = ModelConfig(name="ViT-S-16", random_init=True, device="cpu", text_cache=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segmenter = Segmenter(model, SegmenterConfig(templates="none", background_words=()))
    segmenter.set_queries("cat")
    assert segmenter.text_encoder.misses == 1
    assert not any(tmp_path.iterdir())
