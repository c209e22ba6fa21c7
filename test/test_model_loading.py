"""Weights: local checkpoints, clear errors when there are none, random weights only on request."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import open_clip
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError, WeightsNotFoundError
from zeroseg_ros.core.model import load_clip, resolve_device


def test_local_checkpoint_is_loaded_exactly(tmp_path, vit_b16):
    path = tmp_path / "vit_b16.pt"
    torch.save(vit_b16.state_dict(), path)
    loaded = load_clip(ModelConfig(checkpoint=str(path), device="cpu"))
    assert loaded.weights == f"checkpoint {path}"
    for (name, ours), theirs in zip(loaded.model.state_dict().items(), vit_b16.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)
    assert loaded.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_missing_checkpoint_names_both_ways_to_get_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError) as caught:
        load_clip(ModelConfig(checkpoint=str(tmp_path / "nope.pt"), device="cpu"))
    message = str(caught.value)
    assert "ViT-B-16" in message and "nope.pt" in message and "does not exist" in message
    assert "pretrained" in message and "checkpoint" in message and "internet" in message


def test_corrupt_checkpoint_is_a_weights_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="loading checkpoint"):
        load_clip(ModelConfig(checkpoint=str(path), device="cpu"))


@pytest.mark.timeout(180)
def test_offline_download_failure_is_a_clear_weights_error(tmp_path):
    """With the hub unreachable (offline mode), the pretrained tag fails with the two-ways message."""
    code = (
        "from zeroseg_ros.core.model import load_clip\n"
        "from zeroseg_ros.core.config import ModelConfig\n"
        "from zeroseg_ros.core.errors import WeightsNotFoundError\n"
        f"try:\n    load_clip(ModelConfig(device='cpu', cache_dir={str(tmp_path)!r}))\n"
        "except WeightsNotFoundError as e:\n    print('WEIGHTS-ERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    output = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=170, check=True
    ).stdout
    assert "WEIGHTS-ERROR" in output and "downloading pretrained 'openai' failed" in output
    assert "set checkpoint to its path" in output


def test_unknown_model_and_tag_are_config_errors():
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        load_clip(ModelConfig(name="ViT-Q-99", device="cpu"))
    with pytest.raises(ConfigError, match="no pretrained tag 'imaginary'"):
        load_clip(ModelConfig(pretrained="imaginary", device="cpu"))


def test_random_weights_only_on_request_and_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loaded = load_clip(ModelConfig(name="ViT-B-32", random_init=True, device="cpu"))
    assert loaded.weights == "random initialisation"
    assert not loaded.model.training


def test_device_and_precision_checks():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ConfigError):
        ModelConfig(device="tpu")
    with pytest.raises(ConfigError):
        ModelConfig(precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
                load_clip(ModelConfig(random_init=True, device="cpu", precision="fp16"))
