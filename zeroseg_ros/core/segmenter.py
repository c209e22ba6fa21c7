"""The segmentation pipeline: frame and queries in, label map, confidence and per-query statistics out.

Stages, each in one place:
  1. check and upload the frame                      ``preprocess.check_image`` / ``FrameUploader``
  2. resize and normalise on the device              ``preprocess.Normaliser``
  3. dense patch embeddings (training-free last block)  ``dense.DenseCLIPEncoder``
  4. cosine similarity to the cached text embeddings, in one pass or sliding windows
  5. optional temporal smoothing at patch resolution (``temporal.ProbabilityEMA``), optional PAMR (at the model
     input's size, or at the frame's: ``pamr_resolution``), then labels and confidence at the frame's size
     (``labels.pixel_labels``), threshold
  6. per-query areas and mean scores (``labels.label_statistics``; and one query's probability map, the heat
     map, when asked for: ``labels.query_probability``), all results packed into one buffer: one copy to the host

On CUDA, stages 2-6 for a given frame size are recorded once as a CUDA graph and replayed, which removes the
per-kernel launch cost that dominates a batch-1 ViT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.errors import ConfigError, InferenceResourceError, InvalidImageError, InvalidQueryError
from zeroseg_ros.core.labels import label_statistics, pixel_labels, query_probability
from zeroseg_ros.core.model import LoadedCLIP, load_clip
from zeroseg_ros.core.onednn import measure_linear, onednn_available
from zeroseg_ros.core.overlay import palette
from zeroseg_ros.core.pamr import pamr
from zeroseg_ros.core.preprocess import (
    CHANNEL_ORDERS,
    FrameUploader,
    Normaliser,
    channel_index,
    check_image,
    target_size,
)
from zeroseg_ros.core.progress import Progress, ProgressFactory, no_progress
from zeroseg_ros.core.queries import Query, check_label_count, parse_queries, scene_words
from zeroseg_ros.core.temporal import ProbabilityEMA
from zeroseg_ros.core.text import TextEncoder
from zeroseg_ros.core.text_cache import resolve_cache_dir
from zeroseg_ros.core.turns import CoreTurns

LOGGER = logging.getLogger(__name__)

PAMR_ITERATIONS = 10
PAMR_DILATIONS = (8, 16)
GRAPH_WARMUP_RUNS = 2  # eager runs before a capture: they fill the caches and autotuning
GRAPHS_KEPT = 8  # recorded CUDA graphs kept (each holds its own memory pool); the least recently used go first


class ImageEncoder(Protocol):
    """An exported dense image encoder (ONNX Runtime, TensorRT) that can stand in for ``DenseCLIPEncoder``.

    It maps normalised pixels ``(B, 3, H, W)`` to unit patch embeddings ``(B, D, H / p, W / p)`` as torch tensors
    on the segmenter's device; engines are built for one input size and one method, which they declare.
    """

    input_size: tuple[int, int]
    method: str
    cuda_graph_safe: bool  # whether its calls may be recorded in a CUDA graph (on torch's current stream)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SegmentationResult:
    """What one frame gave. Label ``i`` (1-based) is ``labels[i - 1]``; 0 is background."""

    labels: tuple[str, ...]
    label_map: np.ndarray  # H x W, uint8 (uint16 past 255 queries)
    confidence: np.ndarray  # H x W float32: the winning probability
    scores: np.ndarray  # (Q,) float32: mean confidence over the pixels each query wins, 0 where none
    areas: np.ndarray  # (Q,) int64: pixels each query wins
    timings_ms: dict[str, float] = field(default_factory=dict)
    overlay: np.ndarray | None = None  # H x W x 3 uint8 in the input's channel order, when asked for
    heatmap: np.ndarray | None = None  # H x W float32: the probability of config.heatmap_query, when it is a label


@dataclass(frozen=True)
class _TextState:
    """Everything the image side needs from the queries: fixed until the queries or settings change."""

    queries: tuple[Query, ...]
    embeddings: torch.Tensor  # (S, D) one row per phrase (background words first, then synonyms)
    class_of_row: torch.Tensor  # (S,) the class column each row scores for
    num_columns: int  # classes scored: queries, plus one background column when background words are set
    label_offset: int  # label of column 0: 0 when it is the background column, else 1
    colours: torch.Tensor  # (Q + 1, 3) float RGB overlay colour of each label, as overlay.palette


@dataclass(frozen=True)
class _Field:
    """Where one output lies in the packed byte buffer."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


def pack_outputs(outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, tuple[_Field, ...]]:
    """The outputs' bytes in one uint8 tensor on their device, so the host gets them in one copy (one
    synchronisation instead of one per output). Wider dtypes come first, which keeps every field aligned."""
    order = sorted(range(len(outputs)), key=lambda i: -outputs[i].element_size())
    fields: list[_Field | None] = [None] * len(outputs)
    offset = 0
    for index in order:
        tensor = outputs[index]
        nbytes = tensor.numel() * tensor.element_size()
        fields[index] = _Field(offset, nbytes, tensor.dtype, tuple(tensor.shape))
        offset += nbytes
    packed = torch.cat([outputs[i].contiguous().view(-1).view(torch.uint8) for i in order])
    return packed, tuple(f for f in fields if f is not None)


def unpack_outputs(host: torch.Tensor, fields: Sequence[_Field]) -> list[np.ndarray]:
    """Numpy views of the packed host buffer, in the order the outputs were packed in."""
    return [host[f.offset : f.offset + f.nbytes].view(f.dtype).view(f.shape).numpy() for f in fields]


@dataclass
class _Graph:
    frame: torch.Tensor  # static inputs: each frame, its channel order and the overlay's opacity are copied in
    channels: torch.Tensor
    alpha: torch.Tensor | None
    packed: torch.Tensor  # static output: every result, packed
    fields: tuple[_Field, ...]
    graph: torch.cuda.CUDAGraph


class Segmenter:
    """Zero-shot segmentation of frames by text queries with training-free dense CLIP.

    ``set_queries`` once (or whenever they change), then ``segment`` each frame; any thread may call either.
    Changes (``set_queries``, ``update_config``) run one at a time and encode their text without holding the
    frame lock: frames segmented meanwhile on other threads use the previous queries and settings, and the new
    ones are swapped in at once when ready (a frame sees all old or all new labels). ``text_threads`` limits
    the torch intra-op threads of that encoding on the CPU (None: torch's setting), so that frames keep cores.
    ``onednn`` (fp32 on the CPU): True routes the products through oneDNN, False keeps PyTorch's own, None times
    both at start-up (``onednn.measure_linear``) and takes oneDNN only where it is clearly faster
    (``onednn.CLEAR_WIN``). ``progress`` makes the ``Progress`` of each long wait (model loading, text encoding,
    warm-up, CUDA-graph recording): bars on the command line, log lines in the node.
    """

    def __init__(
        self,
        model_config: ModelConfig | None = None,
        config: SegmenterConfig | None = None,
        cuda_graphs: bool = True,
        profile: bool | None = None,
        image_encoder: ImageEncoder | None = None,
        onednn: bool | None = None,
        text_threads: int | None = None,
        progress: ProgressFactory | None = None,
    ) -> None:
        self.model_config = model_config or ModelConfig()
        self._config = config or SegmenterConfig()
        self._progress = progress
        self._clip: LoadedCLIP = load_clip(
            self.model_config, self._progress_of(f"loading CLIP {self.model_config.name}", "step")
        )
        self.device = self._clip.device
        self._use_graphs = (
            cuda_graphs and self.device.type == "cuda" and (image_encoder is None or image_encoder.cuda_graph_safe)
        )
        # Per-stage timings need a device synchronisation between stages; free on the CPU.
        self.profile = self.device.type == "cpu" if profile is None else profile
        self._engine = image_encoder
        self._onednn, self._onednn_source = self._choose_onednn(onednn)
        self._check_engine(self._config)
        self._encoder = self._make_encoder(self._config)
        # Random weights differ every run: their embeddings are never worth keeping on disk.
        disk_cache = None if self.model_config.random_init else resolve_cache_dir(self.model_config.text_cache)
        # On the CPU frames and text encodings take turns at the cores (core/turns.py); a GPU interleaves them.
        self._turns = CoreTurns(enabled=self.device.type == "cpu")
        self._text = TextEncoder(
            self._clip.model,
            self._clip.tokenizer,
            self.device,
            self._config.templates,
            onednn=self._onednn,
            disk_cache_dir=disk_cache,
            model_name=self.model_config.name,
            turns=self._turns,
        )
        self.text_threads = text_threads
        self._upload = FrameUploader(self.device)
        self._normalise = Normaliser(self._clip.mean, self._clip.std, self.device, self._clip.dtype)
        self._channels = {bgr: channel_index(bgr, self.device) for bgr in (False, True)}
        self._state: _TextState | None = None
        self._graphs: OrderedDict[tuple[int, int, bool], _Graph] = OrderedDict()
        self._temporal = ProbabilityEMA()  # temporal_smoothing's running average, one buffer per frame size
        self._lock = threading.RLock()  # frames; a change holds it only to swap in what it prepared
        self._change_lock = threading.RLock()  # changes, one at a time; text encoding happens under it only

    def _progress_of(self, description: str, unit: str) -> Progress:
        return no_progress if self._progress is None else self._progress(description, unit)

    def _choose_onednn(self, wanted: bool | None) -> tuple[bool, str]:
        """Whether fp32 CPU products go through oneDNN (onednn.py: the same features, twice as fast on an AMD
        EPYC, slower on some Intel Xeons), and why."""
        if self.device.type != "cpu" or self._clip.dtype != torch.float32 or not onednn_available():
            return False, "fp32 on the CPU only"
        if not isinstance(self._clip.model.visual, VisionTransformer):
            return False, "ViT models only"  # and the encoder refuses the others with a clear error
        if wanted is not None:
            return wanted, "set explicitly"
        mlp = self._clip.model.visual.transformer.resblocks[0].mlp.c_fc
        patch = max(self._clip.model.visual.patch_size)
        short = self._config.short_side or 224
        rows = (short // patch) * (short * 4 // 3 // patch) + 1  # the tokens of a 4:3 frame at short_side
        timing = measure_linear(mlp.weight, mlp.bias, rows, "oneDNN")
        return timing.candidate_wins, f"auto: {timing}"

    # ------------------------------------------------------------------ settings
    @property
    def config(self) -> SegmenterConfig:
        return self._config

    @property
    def weights(self) -> str:
        """Where the weights came from, e.g. ``open_clip pretrained 'openai'``."""
        return self._clip.weights

    @property
    def queries(self) -> list[Query]:
        return list(self._state.queries) if self._state else []

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(q.name for q in self._state.queries) if self._state else ()

    @property
    def text_encoder(self) -> TextEncoder:
        return self._text

    def set_queries(self, queries: str | Sequence[str], progress: Progress | None = None) -> list[Query]:
        """Parse and embed the queries (see ``queries.parse_queries``); they apply from the next frame on. Returns
        when they apply; frames on other threads meanwhile keep the previous queries. ``progress(done, total)``
        follows the prompts' encoding (``TextEncoder.encode``); by default the one of the ``progress`` factory."""
        parsed = parse_queries(queries)
        with self._change_lock:
            progress = progress or self._progress_of(f"encoding {len(parsed)} queries", "prompt")
            state = self._text_state(parsed, self._config, progress)
            with self._lock:
                self._state = state
                self._graphs.clear()
                self._temporal.clear()
        return parsed

    def update_config(self, **changes: object) -> SegmenterConfig:
        """Change segmentation settings at run time, e.g. ``update_config(probability_threshold=0.3)``; like
        ``set_queries``, new text (background words, templates) is encoded before the frame lock is taken."""
        with self._change_lock:
            new = self._config.replace(**changes)
            self._check_engine(new)
            encoder = self._encoder
            if (new.method, new.neighbourhood_std) != (self._config.method, self._config.neighbourhood_std):
                encoder = self._make_encoder(new)
            # All or nothing: a failure (e.g. too many phrases with new background words) keeps every setting.
            self._text.set_templates(new.templates)
            try:
                state = None
                if self._state is not None:
                    progress = self._progress_of("encoding the new settings' text", "prompt")
                    state = self._text_state(list(self._state.queries), new, progress)
            except BaseException:
                self._text.set_templates(self._config.templates)
                raise
            with self._lock:
                self._encoder, self._state, self._config = encoder, state, new
                self._graphs.clear()
                self._temporal.clear()
            return new

    def check_config(self, config: SegmenterConfig) -> None:
        """Raises ConfigError when ``config`` cannot be applied to this segmenter (its exported image encoder
        fixes the method and the crop size), without changing anything."""
        self._check_engine(config)

    def _make_encoder(self, config: SegmenterConfig) -> DenseCLIPEncoder:
        return DenseCLIPEncoder(self._clip.model.visual, config.method, config.neighbourhood_std, self._onednn)

    def _check_engine(self, config: SegmenterConfig) -> None:
        """An exported encoder fixes the method and the size the model sees; settings must agree with it."""
        engine = self._engine
        if engine is None:
            return
        if config.method != engine.method:
            raise ConfigError(f"the image encoder engine computes method {engine.method!r}, not {config.method!r}")
        if config.slide_crop and (config.slide_crop, config.slide_crop) != tuple(engine.input_size):
            raise ConfigError(
                f"sliding crops of {config.slide_crop} need an engine built for {config.slide_crop} x "
                f"{config.slide_crop} input, this one takes {engine.input_size}"
            )

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the image encoder sees for a ``height x width`` frame."""
        config = self._config
        if self._engine is not None and not config.slide_crop:
            return tuple(self._engine.input_size)  # type: ignore[return-value]
        return target_size(height, width, config.short_side, max(self._encoder.patch_size))

    def _text_state(
        self, queries: list[Query], config: SegmenterConfig, progress: Progress | None = None
    ) -> _TextState:
        check_label_count(queries, config.max_queries)
        background = scene_words(queries, config.background_words)
        offset = 1 if background else 0
        rows: list[str] = list(background)
        columns: list[int] = [0] * len(background)
        for index, query in enumerate(queries):
            rows.extend(query.synonyms)
            columns.extend([index + offset] * len(query.synonyms))
        with self._turns.encoding(), _torch_threads(self.text_threads if self.device.type == "cpu" else None):
            embeddings = self._text.encode(rows, progress).to(self._clip.dtype)
        return _TextState(
            queries=tuple(queries),
            embeddings=embeddings,
            class_of_row=torch.tensor(columns, device=self.device),
            num_columns=len(queries) + offset,
            label_offset=0 if background else 1,
            colours=torch.from_numpy(palette(len(queries))).float().to(self.device),
        )

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def segment(
        self, image: np.ndarray, channel_order: str = "rgb", overlay_alpha: float | None = None
    ) -> SegmentationResult:
        """Segment one ``H x W x 3`` uint8 frame (``rgb`` or ``bgr``; ``H x W`` grey also accepted).

        With ``overlay_alpha`` the result also holds the frame with each label's colour blended in, drawn on
        the device with the rest of the pipeline (add a legend with ``overlay.draw_legend``).
        """
        if channel_order not in CHANNEL_ORDERS:
            raise InvalidImageError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if overlay_alpha is not None and not 0.0 <= overlay_alpha <= 1.0:
            raise ConfigError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        image = check_image(image, self._config.max_pixels)
        with self._turns.frame(), self._lock:
            state = self._state
            if state is None:
                raise InvalidQueryError("no queries set: call set_queries('person, car') before segment()")
            try:
                return self._segment(image, channel_order == "bgr", state, overlay_alpha)
            except torch.cuda.OutOfMemoryError as error:
                self._graphs.clear()
                self._temporal.clear()
                torch.cuda.empty_cache()
                height, width = image.shape[:2]
                raise InferenceResourceError(
                    f"{self.device} ran out of memory segmenting a {width} x {height} frame with "
                    f"{len(state.queries)} queries; lower short_side, use fewer queries or a smaller model"
                ) from error

    @property
    def uses_onednn(self) -> bool:
        """Whether the image encoder's products run through oneDNN (fp32 on the CPU; the text encoder's too)."""
        return self._onednn and self._engine is None

    @property
    def backend(self) -> str:
        """How frames run, for logs and diagnostics, e.g. ``PyTorch fp16 + CUDA graphs`` or ``OnnxImageEncoder``."""
        runner = type(self._engine).__name__ if self._engine is not None else f"PyTorch {self.precision}"
        extras = [name for name, used in (("oneDNN", self.uses_onednn), ("CUDA graphs", self._use_graphs)) if used]
        return " + ".join([runner, *extras])

    @property
    def precision(self) -> str:
        """The precision the model runs in (fp32, fp16 or bf16): ``auto`` resolved."""
        return self._clip.precision

    @property
    def activation(self) -> str:
        """The activation the model runs (QuickGELU for OpenAI's weights, as trained), for logs and diagnostics."""
        return self._clip.activation

    @property
    def choices(self) -> str:
        """What precision, activation and oneDNN routing were chosen, and why: for the start-up log and
        diagnostics, e.g. ``precision bf16 (auto: this CPU has AVX512-BF16 or AMX); ...``."""
        clip = self._clip
        return (
            f"precision {clip.precision} ({clip.precision_source}); activation {clip.activation} "
            f"({clip.activation_source}); oneDNN {'on' if self._onednn else 'off'} ({self._onednn_source})"
        )

    @property
    def records_graphs(self) -> bool:
        """Whether frames run as recorded CUDA graphs (recorded per frame size and again after any change)."""
        return self._use_graphs

    def warmup(self, sizes: Sequence[tuple[int, int]], overlay_alpha: float | None = None) -> None:
        """Run (and on CUDA, record) the pipeline for ``(height, width)`` frame sizes before the first frame."""
        progress = self._progress_of("warming up", "frame size")
        for done, (height, width) in enumerate(sizes, start=1):
            self.segment(np.zeros((height, width, 3), dtype=np.uint8), overlay_alpha=overlay_alpha)
            progress(done, len(sizes))
        self._temporal.restart()  # blank warm-up frames must not enter the average

    def _segment(
        self, image: np.ndarray, bgr: bool, state: _TextState, overlay_alpha: float | None
    ) -> SegmentationResult:
        timer = _StageTimer(self.device, self.profile)
        channels = self._channels[bgr]
        # The opacity is graph data, like the channel order: a new value needs no new graph.
        alpha = None if overlay_alpha is None else torch.full((), overlay_alpha, device=self.device)
        key = (image.shape[0], image.shape[1], alpha is not None)
        self._temporal.begin(key[:2])
        if self._use_graphs and key not in self._graphs:
            while len(self._graphs) >= GRAPHS_KEPT:
                self._graphs.popitem(last=False)
            self._graphs[key] = self._record(image, channels, state, alpha)
        if self._use_graphs:
            self._graphs.move_to_end(key)
            recorded = self._graphs[key]
            self._upload(image, out=recorded.frame)
            recorded.channels.copy_(channels)
            if recorded.alpha is not None and alpha is not None:
                recorded.alpha.copy_(alpha)
            recorded.graph.replay()
            packed, fields = recorded.packed, recorded.fields
        else:
            packed, fields = self._infer(self._upload(image), channels, state, timer, alpha)
        label_map_np, confidence_np, areas_np, sums_np, *extras = unpack_outputs(self._to_host(packed), fields)
        overlay = extras.pop(0) if overlay_alpha is not None else None
        timer.lap("postprocess")
        areas_np = areas_np[1:]
        scores = np.divide(sums_np[1:], np.maximum(areas_np, 1)).astype(np.float32)
        dtype = np.uint8 if len(state.queries) <= 255 else np.uint16
        return SegmentationResult(
            labels=tuple(q.name for q in state.queries),
            label_map=label_map_np.astype(dtype, copy=False),
            confidence=confidence_np,
            scores=scores,
            areas=areas_np,
            timings_ms=timer.laps,
            overlay=overlay,
            heatmap=extras[0] if extras else None,
        )

    def _record(
        self, image: np.ndarray, channels: torch.Tensor, state: _TextState, alpha: torch.Tensor | None
    ) -> _Graph:
        """Record the device part of the pipeline for this frame size as a CUDA graph."""
        frame = self._upload(image).clone()
        channels = channels.clone()
        alpha = None if alpha is None else alpha.clone()
        untimed = _StageTimer(self.device, False)
        report = self._progress_of(f"recording a CUDA graph for {image.shape[1]} x {image.shape[0]} frames", "run")
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up fills the caches and autotuning outside the capture
            for run in range(1, GRAPH_WARMUP_RUNS + 1):
                self._infer(frame, channels, state, untimed, alpha)
                report(run, GRAPH_WARMUP_RUNS + 1)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a ROS callback, say) must not invalidate this capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            packed, fields = self._infer(frame, channels, state, untimed, alpha)
        report(GRAPH_WARMUP_RUNS + 1, GRAPH_WARMUP_RUNS + 1)
        LOGGER.info("recorded a CUDA graph for %d x %d frames", image.shape[1], image.shape[0])
        return _Graph(frame=frame, channels=channels, alpha=alpha, packed=packed, fields=fields, graph=graph)

    def _to_host(self, packed: torch.Tensor) -> torch.Tensor:
        """The packed results in host memory, in one copy: into a fresh pinned block on CUDA (torch caches them,
        and the result's arrays keep theirs alive), the tensor itself on the CPU."""
        if packed.device.type == "cpu":
            return packed
        host = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host

    def _infer(
        self,
        frame: torch.Tensor,
        channels: torch.Tensor,
        state: _TextState,
        timer: _StageTimer,
        alpha: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[_Field, ...]]:
        """The device part, which a CUDA graph records: ``H x W x 3`` uint8 frame to the packed label map,
        confidence, per-label areas and score sums, and the overlay when ``alpha`` (its opacity, a 0-d tensor on
        the device) is given."""
        config = self._config
        height, width = frame.shape[:2]
        size = self.model_input_size(height, width)
        pixels = self._normalise(frame, size, channels)
        timer.lap("preprocess")

        if config.slide_crop > 0:
            logits = self._slide_logits(pixels, state.embeddings)
        else:
            logits = self._patch_logits(pixels, state.embeddings)
        timer.lap("encode_image")
        if config.temporal_smoothing > 0:
            logits = self._temporal.smooth(logits, (height, width), config.temporal_smoothing, config.logit_scale)
        if config.pamr or config.slide_crop > 0:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if config.pamr:
            guide = pixels
            if config.pamr_resolution == "frame":
                # NACLIP v2's predict: patches -> model input -> frame, then PAMR there with the normalised input
                # as guide, upsampled in float32 (NACLIP's input stays float32 while its CLIP runs in fp16).
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                guide = F.interpolate(pixels.float(), size=(height, width), mode="bilinear", align_corners=False)
            logits = pamr(guide, logits, PAMR_ITERATIONS, PAMR_DILATIONS)
        confidence, column = pixel_labels(
            logits[0], (height, width), config.logit_scale, state.class_of_row, state.num_columns, config.exact_labels
        )
        timer.lap("similarity")

        label_map = (column + state.label_offset).masked_fill_(confidence < config.probability_threshold, 0)
        label_map = label_map.to(torch.uint8 if len(state.queries) <= 255 else torch.int32)
        areas, score_sums = label_statistics(label_map, confidence, len(state.queries) + 1)
        heatmap = tuple(
            query_probability(logits[0], (height, width), config.logit_scale, rows)
            for rows in _heatmap_rows(state, config.heatmap_query)
        )
        if alpha is None:
            return pack_outputs((label_map, confidence, areas, score_sums, *heatmap))
        colours = state.colours.index_select(1, channels)  # the palette in the frame's channel order
        flat = label_map.flatten().long()
        painted = frame.float() * (1.0 - alpha) + colours[flat].view(height, width, 3) * alpha
        overlay = torch.where((label_map > 0).unsqueeze(-1), painted.round(), frame.float()).to(torch.uint8)
        timer.lap("overlay")
        return pack_outputs((label_map, confidence, areas, score_sums, overlay, *heatmap))

    def _patch_logits(self, pixels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every patch to every phrase: ``(B, S, h, w)``."""
        features = self._encoder(pixels) if self._engine is None else self._engine(pixels)
        return torch.einsum("bdhw,sd->bshw", features, embeddings.float())

    def _slide_logits(self, pixels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits at the input's size: crops in one batch, overlaps averaged (as mmseg does)."""
        crop, stride = self._config.slide_crop, self._config.slide_stride
        height, width = pixels.shape[-2:]
        crop_h, crop_w = min(crop, height), min(crop, width)
        boxes = []
        for row in range(max(height - crop + stride - 1, 0) // stride + 1):
            for col in range(max(width - crop + stride - 1, 0) // stride + 1):
                bottom, right = min(row * stride + crop, height), min(col * stride + crop, width)
                boxes.append((bottom - crop_h, right - crop_w))
        crops = torch.cat([pixels[..., top : top + crop_h, left : left + crop_w] for top, left in boxes])
        crop_logits = F.interpolate(
            self._patch_logits(crops, embeddings), size=(crop_h, crop_w), mode="bilinear", align_corners=False
        )
        total = pixels.new_zeros((1, embeddings.shape[0], height, width), dtype=torch.float32)
        count = pixels.new_zeros((1, 1, height, width), dtype=torch.float32)
        for (top, left), logits in zip(boxes, crop_logits, strict=True):
            total[..., top : top + crop_h, left : left + crop_w] += logits
            count[..., top : top + crop_h, left : left + crop_w] += 1
        return total / count


def _heatmap_rows(state: _TextState, name: str) -> tuple[slice, ...]:
    """The phrase rows (its synonyms) of the query named ``name`` (case-insensitive), or none. Rows are the
    background words first, then each query's synonyms in order (``Segmenter._text_state``)."""
    wanted = name.strip().lower()
    start = state.class_of_row.shape[0] - sum(len(query.synonyms) for query in state.queries)
    for query in state.queries:
        if wanted and query.name.lower() == wanted:
            return (slice(start, start + len(query.synonyms)),)
        start += len(query.synonyms)
    return ()


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the calling thread while inside (None: unchanged)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _StageTimer:
    """Wall-clock time per pipeline stage; synchronises the device between stages only when profiling."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self._sync: Callable[[], None] = (
            (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        )
        self._enabled = enabled
        self._start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self._enabled:
            self._sync()
            now = time.perf_counter()
            self.laps[stage] = (now - self._last) * 1000.0
        self._last = now
        self.laps["total"] = (now - self._start) * 1000.0
