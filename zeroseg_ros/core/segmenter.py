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

Frames of several cameras run as one batch (``Segmenter.segment_batch``: one pass per frame size, stages 2-5
batched, stage 6 per frame); ``segment`` is the batch of one frame. On CUDA, stages 2-6 for a given batch size
and frame size are recorded once as a CUDA graph and replayed, which removes the per-kernel launch cost that
dominates a batch-1 ViT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
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
from zeroseg_ros.core.temporal import ProbabilityEMA, blend
from zeroseg_ros.core.text import TextEncoder
from zeroseg_ros.core.text_cache import resolve_cache_dir
from zeroseg_ros.core.turns import CoreTurns

LOGGER = logging.getLogger(__name__)

PAMR_ITERATIONS = 10
PAMR_DILATIONS = (8, 16)
GRAPH_WARMUP_RUNS = 2  # eager runs before a capture: they fill the caches and autotuning
DEFAULT_STREAM = None  # the stream of frames given without one (``segment``, ``segment_batch`` without streams)
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
    frames: torch.Tensor  # static inputs: the frames, their channel orders and the overlay's opacity are copied in
    channels: torch.Tensor
    alpha: torch.Tensor | None
    history: tuple[torch.Tensor, torch.Tensor] | None  # temporal smoothing's past averages and weights
    packed: torch.Tensor  # static outputs: every result, packed, and the new averages
    fields: tuple[_Field, ...]
    average: torch.Tensor | None
    graph: torch.cuda.CUDAGraph


class Segmenter:
    """Zero-shot segmentation of frames by text queries with training-free dense CLIP.

    ``set_queries`` once (or whenever they change), then ``segment`` each frame (or ``segment_batch`` the frames
    of several cameras); any thread may call any of them.
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
        self._graphs: OrderedDict[tuple[int, int, int, bool], _Graph] = OrderedDict()  # (B, H, W, overlay)
        self._temporal = ProbabilityEMA()  # temporal_smoothing's running averages, one per stream
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

    def restart_smoothing(self) -> None:
        """Temporal smoothing forgets every stream's past frames (another recording starts)."""
        with self._lock:
            self._temporal.clear()

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
    def segment(
        self, image: np.ndarray, channel_order: str = "rgb", overlay_alpha: float | None = None
    ) -> SegmentationResult:
        """Segment one ``H x W x 3`` uint8 frame (``rgb`` or ``bgr``; ``H x W`` grey also accepted): the batch of
        one frame of the default stream (``segment_batch``).

        With ``overlay_alpha`` the result also holds the frame with each label's colour blended in, drawn on
        the device with the rest of the pipeline (add a legend with ``overlay.draw_legend``).
        """
        return self.segment_batch([image], channel_order, overlay_alpha)[0]

    @torch.inference_mode()
    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        channel_orders: str | Sequence[str] = "rgb",
        overlay_alpha: float | None = None,
        streams: Sequence[Hashable] | None = None,
    ) -> list[SegmentationResult]:
        """Segment several frames, e.g. one of each camera, through the image encoder together; results in the
        frames' order, each equal to what ``segment`` gives for that frame alone.

        Frames of one size run as one batch (one pass; one recorded CUDA graph per batch size and frame size),
        frames of other sizes in passes of their own; callers bound the batch (the node's ``max_batch``).
        ``channel_orders``: one for all frames or one per frame. ``streams`` names each frame's source (a camera)
        for temporal smoothing, which averages each stream's frames on their own; None puts every frame in the
        one default stream that ``segment`` uses, in order, as successive ``segment`` calls would. With
        smoothing on, a stream's frames run in their order, one per pass. One frame refused (bad image) refuses
        the batch before any work.
        """
        orders = [channel_orders] * len(images) if isinstance(channel_orders, str) else list(channel_orders)
        sources = [DEFAULT_STREAM] * len(images) if streams is None else list(streams)
        if len(orders) != len(images) or len(sources) != len(images):
            raise ValueError(
                f"{len(images)} images need as many channel orders and streams, got {len(orders)} and {len(sources)}"
            )
        for order in orders:
            if order not in CHANNEL_ORDERS:
                raise InvalidImageError(f"channel_order must be one of {CHANNEL_ORDERS}, got {order!r}")
        if overlay_alpha is not None and not 0.0 <= overlay_alpha <= 1.0:
            raise ConfigError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
        frames = [check_image(image, self._config.max_pixels) for image in images]
        results: list[SegmentationResult | None] = [None] * len(frames)
        with self._turns.frame(), self._lock:
            state = self._state
            if state is None:
                raise InvalidQueryError("no queries set: call set_queries('person, car') before segment()")
            smoothing = self._config.temporal_smoothing > 0
            for indices in plan_passes([f.shape[:2] for f in frames], sources, ordered=smoothing):
                batch = [frames[i] for i in indices]
                try:
                    done = self._segment(
                        batch,
                        [orders[i] == "bgr" for i in indices],
                        [sources[i] for i in indices],
                        state,
                        overlay_alpha,
                    )
                except torch.cuda.OutOfMemoryError as error:
                    self._graphs.clear()
                    self._temporal.clear()
                    torch.cuda.empty_cache()
                    height, width = batch[0].shape[:2]
                    raise InferenceResourceError(
                        f"{self.device} ran out of memory segmenting {len(batch)} {width} x {height} frame(s) with "
                        f"{len(state.queries)} queries; lower short_side or the batch size, use fewer queries or a "
                        "smaller model"
                    ) from error
                for index, result in zip(indices, done, strict=True):
                    results[index] = result
        return [result for result in results if result is not None]

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

    def warmup(
        self, sizes: Sequence[tuple[int, int]], overlay_alpha: float | None = None, batch_sizes: Sequence[int] = (1,)
    ) -> None:
        """Run (and on CUDA, record) the pipeline for ``(height, width)`` frame sizes, in batches of each of
        ``batch_sizes`` frames, before the first frame."""
        progress = self._progress_of("warming up", "frame size")
        shapes = [(size, batch) for size in sizes for batch in batch_sizes]
        for done, ((height, width), batch) in enumerate(shapes, start=1):
            blank = np.zeros((height, width, 3), dtype=np.uint8)
            self.segment_batch([blank] * batch, overlay_alpha=overlay_alpha, streams=range(batch))
            progress(done, len(shapes))
        self._temporal.clear()  # blank warm-up frames must not enter the averages

    def _segment(
        self,
        images: Sequence[np.ndarray],
        bgr: Sequence[bool],
        streams: Sequence[Hashable],
        state: _TextState,
        overlay_alpha: float | None,
    ) -> list[SegmentationResult]:
        """One pass: frames of one size through the pipeline together."""
        timer = _StageTimer(self.device, self.profile)
        channels = torch.stack([self._channels[flag] for flag in bgr])
        # The opacity is graph data, like the channel orders: a new value needs no new graph.
        alpha = None if overlay_alpha is None else torch.full((), overlay_alpha, device=self.device)
        size = images[0].shape[:2]
        smoothing = self._config.temporal_smoothing
        history = None
        if smoothing > 0:
            history = self._temporal.past(streams, size, self._logits_shape(size, state), smoothing, self.device)
        key = (len(images), size[0], size[1], alpha is not None)
        if self._use_graphs and key not in self._graphs:
            while len(self._graphs) >= GRAPHS_KEPT:
                self._graphs.popitem(last=False)
            self._graphs[key] = self._record(images, channels, state, alpha, history)
        if self._use_graphs:
            self._graphs.move_to_end(key)
            recorded = self._graphs[key]
            self._upload.batch(images, out=recorded.frames)
            recorded.channels.copy_(channels)
            if recorded.alpha is not None and alpha is not None:
                recorded.alpha.copy_(alpha)
            if recorded.history is not None and history is not None:
                for static, value in zip(recorded.history, history, strict=True):
                    static.copy_(value)
            recorded.graph.replay()
            packed, fields, average = recorded.packed, recorded.fields, recorded.average
        else:
            packed, fields, average = self._infer(self._upload.batch(images), channels, state, timer, alpha, history)
        if average is not None:
            self._temporal.keep(streams, size, average)
        label_maps, confidences, areas, sums, *extras = unpack_outputs(self._to_host(packed), fields)
        overlays = extras.pop(0) if overlay_alpha is not None else None
        heatmaps = extras[0] if extras else None
        timer.lap("postprocess")
        dtype = np.uint8 if len(state.queries) <= 255 else np.uint16
        labels = tuple(q.name for q in state.queries)
        return [
            SegmentationResult(
                labels=labels,
                label_map=label_maps[index].astype(dtype, copy=False),
                confidence=confidences[index],
                scores=np.divide(sums[index, 1:], np.maximum(areas[index, 1:], 1)).astype(np.float32),
                areas=areas[index, 1:],
                timings_ms=dict(timer.laps),
                overlay=None if overlays is None else overlays[index],
                heatmap=None if heatmaps is None else heatmaps[index],
            )
            for index in range(len(images))
        ]

    def _logits_shape(self, size: tuple[int, int], state: _TextState) -> tuple[int, int, int]:
        """``(S, h, w)``: the phrase logits of a frame of ``size`` where temporal smoothing blends them (the patch
        grid, or the model input with sliding windows)."""
        height, width = self.model_input_size(*size)
        if not self._config.slide_crop:
            patch = self._encoder.patch_size
            height, width = height // patch[0], width // patch[1]
        return state.embeddings.shape[0], height, width

    def _record(
        self,
        images: Sequence[np.ndarray],
        channels: torch.Tensor,
        state: _TextState,
        alpha: torch.Tensor | None,
        history: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> _Graph:
        """Record the device part of the pipeline for this batch and frame size as a CUDA graph."""
        frames = self._upload.batch(images).clone()
        channels = channels.clone()
        alpha = None if alpha is None else alpha.clone()
        history = None if history is None else (history[0].clone(), history[1].clone())
        untimed = _StageTimer(self.device, False)
        height, width = images[0].shape[:2]
        shape = f"{len(images)} x {width} x {height}"
        report = self._progress_of(f"recording a CUDA graph for {shape} frames", "run")
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up fills the caches and autotuning outside the capture
            for run in range(1, GRAPH_WARMUP_RUNS + 1):
                self._infer(frames, channels, state, untimed, alpha, history)
                report(run, GRAPH_WARMUP_RUNS + 1)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a ROS callback, say) must not invalidate this capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            packed, fields, average = self._infer(frames, channels, state, untimed, alpha, history)
        report(GRAPH_WARMUP_RUNS + 1, GRAPH_WARMUP_RUNS + 1)
        LOGGER.info("recorded a CUDA graph for %s frames", shape)
        return _Graph(
            frames=frames,
            channels=channels,
            alpha=alpha,
            history=history,
            packed=packed,
            fields=fields,
            average=average,
            graph=graph,
        )

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
        frames: torch.Tensor,
        channels: torch.Tensor,
        state: _TextState,
        timer: _StageTimer,
        alpha: torch.Tensor | None,
        history: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[_Field, ...], torch.Tensor | None]:
        """The device part, which a CUDA graph records: ``B x H x W x 3`` uint8 frames (``channels`` ``(B, 3)``
        their orders) to the packed label maps, confidences, per-label areas and score sums, and the overlays
        when ``alpha`` (their opacity, a 0-d tensor on the device) is given; with ``history`` (past averages and
        weights, ``temporal.ProbabilityEMA.past``) the logits are smoothed and the new averages returned too."""
        config = self._config
        height, width = frames.shape[1:3]
        size = self.model_input_size(height, width)
        pixels = self._normalise(frames, size, channels)
        timer.lap("preprocess")

        if config.slide_crop > 0:
            logits = self._slide_logits(pixels, state.embeddings)
        else:
            logits = self._patch_logits(pixels, state.embeddings)
        timer.lap("encode_image")
        average = None
        if history is not None:
            logits, average = blend(logits, *history, config.logit_scale)
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
        outputs = [self._frame_outputs(logits[b], frames[b], channels[b], state, alpha) for b in range(len(frames))]
        timer.lap("similarity")
        packed, fields = pack_outputs([torch.stack(kind) for kind in zip(*outputs, strict=True)])
        return packed, fields, average

    def _frame_outputs(
        self,
        logits: torch.Tensor,
        frame: torch.Tensor,
        channels: torch.Tensor,
        state: _TextState,
        alpha: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """One frame's outputs from its logits ``(S, h, w)``: label map, confidence, areas and score sums, then
        the overlay when ``alpha`` is given and the heat map when its query is a label."""
        config = self._config
        height, width = frame.shape[:2]
        confidence, column = pixel_labels(
            logits, (height, width), config.logit_scale, state.class_of_row, state.num_columns, config.exact_labels
        )
        label_map = (column + state.label_offset).masked_fill_(confidence < config.probability_threshold, 0)
        label_map = label_map.to(torch.uint8 if len(state.queries) <= 255 else torch.int32)
        areas, score_sums = label_statistics(label_map, confidence, len(state.queries) + 1)
        heatmap = tuple(
            query_probability(logits, (height, width), config.logit_scale, rows)
            for rows in _heatmap_rows(state, config.heatmap_query)
        )
        if alpha is None:
            return (label_map, confidence, areas, score_sums, *heatmap)
        colours = state.colours.index_select(1, channels)  # the palette in the frame's channel order
        flat = label_map.flatten().long()
        painted = frame.float() * (1.0 - alpha) + colours[flat].view(height, width, 3) * alpha
        overlay = torch.where((label_map > 0).unsqueeze(-1), painted.round(), frame.float()).to(torch.uint8)
        return (label_map, confidence, areas, score_sums, overlay, *heatmap)

    def _patch_logits(self, pixels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every patch to every phrase: ``(B, S, h, w)``."""
        if self._engine is None:
            features = self._encoder(pixels)
        else:  # engines are built for one image at a time
            features = torch.cat([self._engine(image) for image in pixels.split(1)])
        return torch.einsum("bdhw,sd->bshw", features, embeddings.float())

    def _slide_logits(self, pixels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits at the input's size: every frame's crops in one batch, overlaps averaged (as
        mmseg does)."""
        crop, stride = self._config.slide_crop, self._config.slide_stride
        batch = pixels.shape[0]
        height, width = pixels.shape[-2:]
        crop_h, crop_w = min(crop, height), min(crop, width)
        boxes = []
        for row in range(max(height - crop + stride - 1, 0) // stride + 1):
            for col in range(max(width - crop + stride - 1, 0) // stride + 1):
                bottom, right = min(row * stride + crop, height), min(col * stride + crop, width)
                boxes.append((bottom - crop_h, right - crop_w))
        # Box-major: the crops of box k are rows k * B .. k * B + B - 1.
        crops = torch.cat([pixels[..., top : top + crop_h, left : left + crop_w] for top, left in boxes])
        crop_logits = F.interpolate(
            self._patch_logits(crops, embeddings), size=(crop_h, crop_w), mode="bilinear", align_corners=False
        )
        total = pixels.new_zeros((batch, embeddings.shape[0], height, width), dtype=torch.float32)
        count = pixels.new_zeros((1, 1, height, width), dtype=torch.float32)
        for (top, left), logits in zip(boxes, crop_logits.split(batch), strict=True):
            total[..., top : top + crop_h, left : left + crop_w] += logits
            count[..., top : top + crop_h, left : left + crop_w] += 1
        return total / count


def plan_passes(sizes: Sequence[tuple[int, int]], streams: Sequence[Hashable], ordered: bool) -> list[list[int]]:
    """The frames (indices) of each pass: frames of one size together, in the order given. ``ordered`` (temporal
    smoothing: a frame needs its stream's previous one done): a frame whose stream already waits in a pass
    closes every open pass first, so each stream's frames run in order, one per pass."""
    passes: list[list[int]] = []
    open_passes: dict[tuple[int, int], list[int]] = {}
    waiting: set[Hashable] = set()
    for index, (size, stream) in enumerate(zip(sizes, streams, strict=True)):
        if ordered and stream in waiting:
            passes.extend(open_passes.values())
            open_passes.clear()
            waiting.clear()
        open_passes.setdefault(tuple(size), []).append(index)
        waiting.add(stream)
    passes.extend(open_passes.values())
    return passes


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
