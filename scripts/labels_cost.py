"""Cost of labelling against queries and frame size, candidates against exact (docs/benchmarks.md).

``python scripts/labels_cost.py time [ROUNDS]``: milliseconds after the image encoder (``labels.pixel_labels``
and ``labels.label_statistics``) for 1, 8 and 171 COCO-Stuff queries at three frame sizes, and the encoder's
own time, on one thread, the minimum of interleaved rounds (on a shared machine the least disturbed run).
``python scripts/labels_cost.py memory``: for each case, a fresh process segments one frame; its peak resident
memory above what it held after the model, the queries and a first small frame.
Random ViT-B/16 weights, short side 224.
"""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import time
import warnings

import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.labels import label_statistics, pixel_labels
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.bench.measure import query_subsets, synthetic_frame

SIZES = ((480, 640), (720, 1280), (1080, 1920))
COUNTS = (1, 8, 171)


def segmenter(exact: bool = False) -> Segmenter:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    config = SegmenterConfig(templates="none", short_side=224, exact_labels=exact)
    return Segmenter(ModelConfig(random_init=True, device="cpu"), config)


def time_labels(rounds: int) -> None:
    torch.set_num_threads(1)
    seg = segmenter()
    seg.set_queries("@coco-stuff")
    state = seg._state
    assert state is not None
    with torch.inference_mode():
        logits, pixels = {}, {}
        for height, width in SIZES:
            frame = torch.from_numpy(synthetic_frame(height, width))
            pixels[height] = seg._normalise(frame, seg.model_input_size(height, width), seg._channels[False])
            logits[height] = seg._patch_logits(pixels[height], state.embeddings)[0]
        cases = [(n, exact, size) for size in SIZES for n in COUNTS for exact in (False, True) if n > 8 or not exact]
        best: dict[tuple[int, bool, tuple[int, int]], float] = {}
        encoder: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            seg._encoder(pixels[480])
            encoder.append((time.perf_counter() - start) * 1000)
            for n, exact, size in cases:
                start = time.perf_counter()
                confidence, column = pixel_labels(logits[size[0]][:n], size, 40.0, torch.arange(n), n, exact)
                label_statistics(column.to(torch.uint8), confidence, n + 1)
                elapsed = (time.perf_counter() - start) * 1000
                best[(n, exact, size)] = min(best.get((n, exact, size), elapsed), elapsed)
    print(f"encoder, 640x480 frame (input 304x224), one thread: {min(encoder):.0f} ms (min of {rounds})")
    print("| frame | queries | labelling | ms after the encoder |\n| --- | --- | --- | --- |")
    for (n, exact, (height, width)), elapsed in best.items():
        print(f"| {width}x{height} | {n} | {'exact' if exact or n <= 8 else 'candidates'} | {elapsed:.1f} |")


def memory_case(width: int, height: int, count: int, exact: bool) -> None:
    torch.set_num_threads(2)
    seg = segmenter(exact)
    seg.set_queries(query_subsets("@coco-stuff", [count])[0][1])
    seg.segment(synthetic_frame(224, 224))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seg.segment(synthetic_frame(height, width))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = "exact" if exact else "candidates"
    print(f"| {width}x{height} | {count} | {path} | {before:.0f} | {after:.0f} | +{after - before:.0f} |", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["time"]:
        time_labels(int(argv[1]) if len(argv) > 1 else 5)
    elif argv[:1] == ["memory"]:
        print("| frame | queries | labelling | peak RSS before, MB | after, MB | the frame's |")
        print("| --- | --- | --- | --- | --- | --- |")
        for width, height, count, exact in ((1920, 1080, 171, False), (1920, 1080, 171, True), (1920, 1080, 1, False)):
            case = [str(width), str(height), str(count), "exact" if exact else "candidates"]
            subprocess.run([sys.executable, __file__, "memory-case", *case], check=True)
    elif argv[:1] == ["memory-case"]:
        memory_case(int(argv[1]), int(argv[2]), int(argv[3]), argv[4] == "exact")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
