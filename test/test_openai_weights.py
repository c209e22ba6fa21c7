"""OpenAI's weights as users have them: the activation they were trained with (QuickGELU), OpenAI state dicts
and TorchScript archives. Held against open_clip's own loaders of the same files, on random weights of
ViT-B-32 (the same code path as the default ViT-B-16, four times fewer patches)."""

from __future__ import annotations

import warnings
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import convert_weights_to_lp
from torch import nn

from zeroseg_ros.core.config import METHODS, ModelConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.errors import WeightsNotFoundError
from zeroseg_ros.core.model import OPENAI_EXTRA_ENTRIES, load_clip, tag_activation

ARCHITECTURE = "ViT-B-32"
SIZES = [(224, 224), (224, 320)]  # square, and non-square (H x W)


def _quiet_create(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name).eval()


@pytest.fixture(scope="module")
def openai_state_dict() -> dict[str, torch.Tensor]:
    """A state dict laid out as OpenAI's files are (what ``build_model_from_openai_state_dict`` reads): open_clip's
    CLIP keys, the linear and conv weights in fp16 (``convert_weights_to_fp16``), plus the archive's
    ``input_resolution``, ``context_length`` and ``vocab_size`` entries."""
    torch.manual_seed(0)
    model = _quiet_create(f"{ARCHITECTURE}-quickgelu")
    convert_weights_to_lp(model, torch.float16)
    state_dict = {key: value.clone() for key, value in model.state_dict().items()}
    state_dict.update(
        input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    return state_dict


@pytest.fixture(scope="module")
def openai_state_dict_file(tmp_path_factory, openai_state_dict) -> Path:
    path = tmp_path_factory.mktemp("openai") / "ViT-B-32-state-dict.pt"
    torch.save(openai_state_dict, path)
    return path


@pytest.fixture(scope="module")
def torchscript_archive(tmp_path_factory, openai_state_dict) -> Path:
    """A TorchScript archive whose ``torch.jit.load(...).state_dict()`` is the OpenAI state dict, which is all that
    open_clip's ``load_openai_model`` (and ours) take from OpenAI's ``ViT-B-32.pt``."""
    root = nn.Module()
    for key, value in openai_state_dict.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value.clone())
    path = tmp_path_factory.mktemp("openai") / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(root), str(path))
    return path


@pytest.fixture(scope="module")
def open_clip_quickgelu(openai_state_dict_file) -> nn.Module:
    """open_clip's ``ViT-B-32-quickgelu`` with the weights of the same file (fp32, as we run it)."""
    model = _quiet_create(f"{ARCHITECTURE}-quickgelu")
    weights = torch.load(openai_state_dict_file, weights_only=True)
    model.load_state_dict({k: v for k, v in weights.items() if k not in OPENAI_EXTRA_ENTRIES})
    return model.float().requires_grad_(False)


def _patch_cosines(ours: nn.Module, theirs: nn.Module, method: str, size: tuple[int, int]) -> torch.Tensor:
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        mine = DenseCLIPEncoder(ours.visual, method)(pixels)
        reference = DenseCLIPEncoder(theirs.visual, method)(pixels)
    return F.cosine_similarity(mine, reference, dim=1).flatten()


def _load(path: Path, **fields: object):
    return load_clip(ModelConfig(name=ARCHITECTURE, checkpoint=str(path), device="cpu", precision="fp32", **fields))


@pytest.mark.parametrize("file", ["openai_state_dict_file", "torchscript_archive"])
def test_openai_files_under_the_plain_name_give_open_clip_quickgelu_features(request, file, open_clip_quickgelu):
    loaded = _load(request.getfixturevalue(file))
    assert loaded.activation == "QuickGELU" and "OpenAI trained with it" in loaded.activation_source
    for method in METHODS:
        for size in SIZES:
            cosines = _patch_cosines(loaded.model, open_clip_quickgelu, method, size)
            assert cosines.min() >= 0.99999, (method, size, float(cosines.min()))
    tokens = open_clip.get_tokenizer(ARCHITECTURE)(["a photo of a cat.", "a traffic cone"])
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.encode_text(tokens), open_clip_quickgelu.encode_text(tokens))


def test_the_same_weights_under_gelu_give_other_features(openai_state_dict_file, open_clip_quickgelu):
    """What the test above guards against: open_clip's plain name runs GELU, and its threshold sees it (random
    weights keep activations near 0, where GELU and QuickGELU differ least: real weights differ far more)."""
    gelu = _load(openai_state_dict_file, quick_gelu=False)
    assert gelu.activation == "GELU"
    for method in METHODS:
        assert _patch_cosines(gelu.model, open_clip_quickgelu, method, SIZES[0]).min() < 0.99999, method


def test_our_torchscript_loading_matches_open_clip_s_openai_loader(torchscript_archive):
    reference = open_clip.load_openai_model(str(torchscript_archive), precision="fp32", device="cpu")
    loaded = _load(torchscript_archive)
    assert loaded.weights == f"checkpoint {torchscript_archive}"
    for (name, ours), theirs in zip(loaded.model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_open_clip_s_checkpoint_loader_refuses_the_archive_that_we_load(torchscript_archive):
    """The defect this fixes: open_clip's loader (weights_only=True) cannot read OpenAI's ViT-B-16.pt."""
    with pytest.raises(RuntimeError, match="TorchScript"):
        _quiet_create_with(f"{ARCHITECTURE}-quickgelu", str(torchscript_archive))
    assert _load(torchscript_archive).activation == "QuickGELU"


def _quiet_create_with(name: str, pretrained: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_clip.create_model(name, pretrained=pretrained)


def test_an_openai_file_of_another_architecture_is_a_weights_error(openai_state_dict_file):
    with pytest.raises(WeightsNotFoundError, match="another architecture") as caught:
        load_clip(ModelConfig(name="ViT-B-16", checkpoint=str(openai_state_dict_file), device="cpu"))
    assert "'patch_size': 32" in str(caught.value) and "'patch_size': 16" in str(caught.value)


def test_the_openai_tag_resolves_to_quickgelu_without_downloading(monkeypatch, tmp_path, open_clip_quickgelu):
    assert tag_activation(ModelConfig())[0] is True  # the default: ViT-B-16 'openai'
    assert tag_activation(ModelConfig(pretrained="laion2b_s34b_b88k"))[0] is False
    # The download itself is replaced by a local file of open_clip's format: no network, the real factory path.
    weights = tmp_path / "open_clip_model.pt"
    torch.save(open_clip_quickgelu.state_dict(), weights)
    asked: list[dict] = []
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **_: asked.append(cfg) or str(weights))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # open_clip's "QuickGELU mismatch" warning would fail here
        loaded = load_clip(ModelConfig(name=ARCHITECTURE, pretrained="openai", device="cpu", precision="fp32"))
    assert asked and asked[0]["quick_gelu"] is True
    assert loaded.activation == "QuickGELU" and loaded.activation_source == "pretrained 'openai' was trained with it"


def test_an_open_clip_format_file_runs_what_the_setting_or_the_name_says(tmp_path, open_clip_quickgelu, caplog):
    path = tmp_path / "open_clip_format.pt"
    torch.save(open_clip_quickgelu.state_dict(), path)
    assert _load(path, quick_gelu=True).activation == "QuickGELU"
    with caplog.at_level("WARNING", logger="zeroseg_ros.core.model"):
        undetermined = _load(path)
    assert undetermined.activation == "GELU" and "the checkpoint does not say" in undetermined.activation_source
    assert "set quick_gelu true" in caplog.text
    named = load_clip(ModelConfig(name=f"{ARCHITECTURE}-quickgelu", checkpoint=str(path), device="cpu"))
    assert named.activation == "QuickGELU"


def test_the_setting_reaches_the_model_config_from_the_command_line_and_the_node_parameters() -> None:
    import argparse

    from zeroseg_ros.core.errors import ConfigError
    from zeroseg_ros.ros.params import PARAMETERS, model_config
    from zeroseg_ros.tools.cli_args import add_model_arguments, model_config_from_args

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    for text, expected in (("auto", None), ("true", True), ("false", False)):
        assert model_config_from_args(parser.parse_args(["--quick-gelu", text])).quick_gelu is expected
        values = {spec.name: spec.default for spec in PARAMETERS} | {"quick_gelu": text}
        assert model_config(values).quick_gelu is expected
    assert model_config_from_args(parser.parse_args([])).precision == "auto"
    with pytest.raises(ConfigError, match="quick_gelu must be one of auto, true, false"):
        model_config({spec.name: spec.default for spec in PARAMETERS} | {"quick_gelu": "yes"})
