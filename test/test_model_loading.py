"""Weights: local checkpoints, clear errors when there are none, random weights only on request."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings

import open_clip
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError, WeightsNotFoundError
from zeroseg_ros.core.model import load_clip, resolve_device, resolve_precision


def test_local_checkpoint_is_loaded_exactly(tmp_path, vit_b16):
    path = tmp_path / "vit_b16.pt"
    torch.save(vit_b16.state_dict(), path)
    loaded = load_clip(ModelConfig(checkpoint=str(path), device="cpu", precision="fp32", quick_gelu=False))
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


@pytest.mark.timeout(120)
def test_an_unreachable_hub_gives_the_weights_error_without_the_client_s_retries(tmp_path):
    """No HF_HUB_OFFLINE, the hub at a closed local port, nothing cached: the error comes at once, and the hub
    client's retry loop (a WARNING per retry, about a minute in all) never runs."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import time\n"
        "from zeroseg_ros.core.model import load_clip\n"
        "from zeroseg_ros.core.config import ModelConfig\n"
        "from zeroseg_ros.core.errors import WeightsNotFoundError\n"
        "start = time.monotonic()\n"
        f"try:\n    load_clip(ModelConfig(name='ViT-B-32', device='cpu', cache_dir={str(tmp_path)!r}))\n"
        "except WeightsNotFoundError as e:\n    print('WEIGHTS-ERROR', e)\n"
        "print('SECONDS', time.monotonic() - start)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=110)
    assert "WEIGHTS-ERROR" in result.stdout, result.stdout + result.stderr
    assert f"the model hub (127.0.0.1:{port}) did not answer" in result.stdout
    assert "set checkpoint to its path" in result.stdout and "TorchScript" in result.stdout
    assert "Retrying" not in result.stderr
    assert float(result.stdout.split("SECONDS")[1]) < 20.0  # generous: the retries alone take about a minute


@pytest.mark.timeout(120)
def test_an_unreachable_hub_still_loads_cached_weights_at_once(tmp_path):
    """The hub client's cache layout (refs/main -> snapshots/<revision>/file) holding ViT-B-32 'openai': with the
    hub unreachable it loads from there, with the activation the tag was trained with."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = open_clip.create_model("ViT-B-32-quickgelu").state_dict()
    repository = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (repository / "refs").mkdir(parents=True)
    (repository / "refs" / "main").write_text("0" * 40)
    snapshot = repository / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.save(weights, snapshot / "open_clip_pytorch_model.bin")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "from zeroseg_ros.core.model import load_clip\n"
        "from zeroseg_ros.core.config import ModelConfig\n"
        f"loaded = load_clip(ModelConfig(name='ViT-B-32', device='cpu', cache_dir={str(tmp_path / 'hub')!r}))\n"
        "print('LOADED', loaded.weights, loaded.activation)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=110)
    assert "LOADED open_clip pretrained 'openai' QuickGELU" in result.stdout, result.stdout + result.stderr
    assert "Retrying" not in result.stderr


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
    assert loaded.activation == "GELU"  # ViT-B-32's config; ViT-B-32-quickgelu runs QuickGELU


def test_auto_precision_follows_the_device_and_a_measurement_on_bf16_cpus(monkeypatch):
    from zeroseg_ros.core import model
    from zeroseg_ros.core.onednn import LinearTiming

    def timing(bf16_ms: float):
        return lambda: LinearTiming((257, 768, 3072), "fp32", 10.0, "bf16", bf16_ms)

    def unused():
        raise AssertionError("no measurement was needed")

    assert resolve_precision("fp32", torch.device("cpu"), unused) == ("fp32", "set explicitly")
    assert resolve_precision("auto", torch.device("cuda", 0), unused)[0] == "fp16"
    monkeypatch.setattr(model, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu"), unused)[0] == "fp32"
    monkeypatch.setattr(model, "cpu_has_bf16", lambda: True)
    precision, why = resolve_precision("auto", torch.device("cpu"), timing(4.0))
    assert precision == "bf16" and "fp32 10.00 ms, bf16 4.00 ms" in why
    precision, why = resolve_precision("auto", torch.device("cpu"), timing(9.0))
    assert precision == "fp32" and "not clearly faster" in why
    # The real measurement on this machine, through load_clip: whichever way it goes, it is named.
    with pytest.warns(UserWarning, match="RANDOM"):
        loaded = load_clip(ModelConfig(name="ViT-S-32", random_init=True, device="cpu"))
    assert loaded.precision in {"fp32", "bf16"} and loaded.precision_source.startswith("auto: ")
    assert ModelConfig().precision == "auto"


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
