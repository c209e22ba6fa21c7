"""Exported dense image encoders that stand in for the PyTorch one: ONNX Runtime and TensorRT.

Both satisfy ``segmenter.ImageEncoder``: ``input_size`` and ``method`` say what they were built for, and
calling one maps normalised pixels ``(1, 3, H, W)`` to unit patch features ``(1, D, H / p, W / p)`` as a torch
tensor on the segmenter's device. ``load_image_encoder`` picks one by the file's suffix, which is what the
node's encoder-path parameter and ``zeroseg bench --engine`` use.

``cuda_graph_safe`` tells whether a call may be recorded inside a CUDA graph: TensorRT enqueues on the current
torch stream and can be; ONNX Runtime runs on streams of its own and cannot.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.model import resolve_device
from zeroseg_ros.engines.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    EncoderMetadata,
    export_encoder,
    load_encoder,
    read_sidecar,
)

ONNX_SUFFIXES = (".onnx",)
TENSORRT_SUFFIXES = (".engine", ".plan")


def _check_pixels(pixels: torch.Tensor, input_size: tuple[int, int]) -> None:
    if pixels.ndim != 4 or pixels.shape[0] != 1 or tuple(pixels.shape[-2:]) != tuple(input_size):
        raise ConfigError(
            f"this engine takes (1, 3, {input_size[0]}, {input_size[1]}) pixels, got {tuple(pixels.shape)}; "
            "export one for this size (zeroseg export-onnx --height H --width W)"
        )


class OnnxImageEncoder:
    """An ONNX graph from ``zeroseg export-onnx`` run by ONNX Runtime.

    On a CUDA device the TensorRT and CUDA execution providers are used when the installed onnxruntime has
    them, and inputs and outputs stay on the GPU (I/O binding to torch's memory); otherwise the CPU provider.
    """

    cuda_graph_safe = False

    def __init__(self, path: str | Path, device: torch.device, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX encoder {self.path} does not exist")
        self.device = torch.device(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        # ORT's worker threads otherwise spin after each run and take the cores from torch's stages.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            index = {"device_id": self.device.index or 0}
            wanted = [
                *(
                    (name, index)
                    for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                    if name in available
                ),
                "CPUExecutionProvider",
            ]
        self._session = ort.InferenceSession(str(self.path), options, providers=wanted)
        self.providers: list[str] = self._session.get_providers()
        props = self._session.get_modelmeta().custom_metadata_map
        self.metadata = EncoderMetadata.from_props(props)
        self.method = self.metadata.method
        self.input_size = (self.metadata.height, self.metadata.width)
        output = self._session.get_outputs()[0]
        self._output_shape = tuple(int(d) for d in output.shape)
        self._on_gpu = self.device.type == "cuda" and self.providers[0] != "CPUExecutionProvider"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        _check_pixels(pixels, self.input_size)
        pixels = pixels.float().contiguous()
        if not self._on_gpu:
            (features,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: pixels.cpu().numpy()})
            return torch.from_numpy(features).to(self.device)
        pixels = pixels.to(self.device)
        features = torch.empty(self._output_shape, dtype=torch.float32, device=self.device)
        binding = self._session.io_binding()
        index = self.device.index or 0
        binding.bind_input(INPUT_NAME, "cuda", index, np.float32, tuple(pixels.shape), pixels.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", index, np.float32, self._output_shape, features.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # ORT reads the input on its own stream
        self._session.run_with_iobinding(binding)
        return features


class TensorRTImageEncoder:
    """A serialised TensorRT engine (``trtexec --onnx=encoder.onnx --saveEngine=encoder.engine``).

    TensorRT engines carry no metadata, so the method and input size come from the ``.json`` file that
    ``zeroseg export-onnx`` wrote next to the ONNX graph (copied next to the engine with the same name).
    """

    cuda_graph_safe = True

    def __init__(self, path: str | Path, device: torch.device) -> None:
        import tensorrt as trt

        self.path = Path(path)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"a TensorRT engine runs on a CUDA device, not {self.device}")
        if not self.path.is_file():
            raise ConfigError(f"TensorRT engine {self.path} does not exist")
        self.metadata = read_sidecar(self.path)
        self.method = self.metadata.method
        self.input_size = (self.metadata.height, self.metadata.width)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._engine: Any = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise ConfigError(
                    f"TensorRT could not load {self.path}: engines only run on the GPU model and TensorRT "
                    "version that built them; rebuild it on this machine with trtexec"
                )
            self._context: Any = self._engine.create_execution_context()
        engine_input = tuple(self._engine.get_tensor_shape(INPUT_NAME))
        if engine_input[-2:] != self.input_size:
            raise ConfigError(f"{self.path} takes {engine_input}, but its .json sidecar says {self.input_size}")
        self._dtypes = {
            name: torch.float16 if self._engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            for name in (INPUT_NAME, OUTPUT_NAME)
        }
        # Static output buffer: its address is fixed once, which keeps the engine call capturable in a graph.
        self._features = torch.empty(
            tuple(self._engine.get_tensor_shape(OUTPUT_NAME)), dtype=self._dtypes[OUTPUT_NAME], device=self.device
        )
        self._context.set_tensor_address(OUTPUT_NAME, self._features.data_ptr())

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        _check_pixels(pixels, self.input_size)
        pixels = pixels.to(self.device, self._dtypes[INPUT_NAME]).contiguous()
        self._context.set_tensor_address(INPUT_NAME, pixels.data_ptr())
        if not self._context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError(f"TensorRT engine {self.path} failed to run")
        # A clone, so a later call does not overwrite features a caller still holds.
        return self._features.float().clone() if self._features.dtype != torch.float32 else self._features.clone()


def cached_onnx_encoder(
    model_config: ModelConfig,
    method: str,
    input_size: tuple[int, int],
    cache_dir: str | Path,
    neighbourhood_std: float = SegmenterConfig().neighbourhood_std,
    threads: int = 0,
) -> OnnxImageEncoder:
    """An ONNX Runtime encoder for ``model_config`` at one input size, exported once into ``cache_dir``.

    The CPU fast path: on 2 cores ONNX Runtime runs ViT-B/16 about twice as fast as PyTorch eager (see
    docs/benchmarks.md). Pass it as ``Segmenter(model_config, config, image_encoder=...)``. Random weights are
    exported anew on every call (they are not the same weights twice), real ones once per weights file.
    """
    weights_id = "random" if model_config.random_init else Path(model_config.checkpoint or model_config.pretrained).stem
    name = f"{model_config.name}_{weights_id}_{method}_{neighbourhood_std:g}_{input_size[0]}x{input_size[1]}.onnx"
    path = Path(cache_dir).expanduser() / re.sub(r"[^A-Za-z0-9_.x-]", "-", name)
    if model_config.random_init or not path.is_file():
        encoder, weights = load_encoder(model_config, method, neighbourhood_std)
        export_encoder(encoder, path, input_size[0], input_size[1], model_config.name, weights)
    return OnnxImageEncoder(path, resolve_device(model_config.device), threads)


def load_image_encoder(path: str | Path, device: torch.device | str) -> OnnxImageEncoder | TensorRTImageEncoder:
    """The exported encoder at ``path``: ``.onnx`` runs on ONNX Runtime, ``.engine``/``.plan`` on TensorRT."""
    path = Path(path)
    device = torch.device(device)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return OnnxImageEncoder(path, device)
    if suffix in TENSORRT_SUFFIXES:
        try:
            import tensorrt  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                f"{path} is a TensorRT engine but the tensorrt Python package is not installed (on a Jetson it "
                "comes with JetPack); or load the .onnx graph instead"
            ) from error
        return TensorRTImageEncoder(path, device)
    raise ConfigError(f"unknown image encoder file {path}: expected {', '.join(ONNX_SUFFIXES + TENSORRT_SUFFIXES)}")


def compare_with_torch(encoder: DenseCLIPEncoder, path: Path, seed: int = 0) -> float:
    """Max absolute difference between ONNX Runtime (CPU) and ``encoder`` on one random input."""
    engine = OnnxImageEncoder(path, torch.device("cpu"))
    pixels = torch.randn(1, 3, *engine.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = encoder(pixels)
    return float(np.abs(engine(pixels).numpy() - expected.numpy()).max())
