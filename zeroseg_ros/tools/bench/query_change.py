"""``python -m zeroseg_ros.tools.bench.query_change``: do frames keep flowing while the queries change?

Three measurements on one model (random weights unless ``--checkpoint``: the cost is the same):
  1. the normal frame time (p50 over ``--frames`` frames, old queries);
  2. the change alone: ``set_queries(--to)`` with no frame running, on a fresh segmenter (nothing cached);
  3. the change beside a frame loop, as the node runs it (a thread encodes, another segments): the longest
     gap between answered frames while it runs, and how long it takes.
Then, with ``--restart``, the time a new segmenter needs for the same queries from the on-disk text cache
(``--checkpoint`` needed: random weights are never cached). Prints the figures and the two ratios of issue 10
(gap / frame time, concurrent change / change alone); asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import warnings

import numpy as np
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.bench.measure import synthetic_frame


def _segmenter(args: argparse.Namespace, text_cache: str, start: bool = True) -> Segmenter:
    model = ModelConfig(
        name=args.model,
        checkpoint=args.checkpoint,
        random_init=args.checkpoint is None,
        device="cpu",
        text_cache=text_cache,
    )
    config = SegmenterConfig(short_side=args.short_side, templates=args.templates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segmenter = Segmenter(model, config, text_threads=args.text_threads)
    if start:
        segmenter.set_queries(args.start)
    return segmenter


def _timed_change(segmenter: Segmenter, queries: str) -> float:
    started = time.perf_counter()
    segmenter.set_queries(queries)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--checkpoint", default=None, help="weights file (default: random weights)")
    parser.add_argument("--size", default="640x480", help="frame WxH (%(default)s)")
    parser.add_argument("--short-side", type=int, default=SegmenterConfig().short_side)
    parser.add_argument("--templates", default="imagenet80")
    parser.add_argument("--start", default="person, chair", help="queries before the change (%(default)s)")
    parser.add_argument("--to", default="@coco-stuff", help="queries after the change (%(default)s)")
    parser.add_argument("--frames", type=int, default=5, help="frames for the normal frame time (%(default)s)")
    parser.add_argument("--text-threads", type=int, default=None, help="torch threads of the encoding")
    parser.add_argument("--frame-threads", type=int, default=None, help="torch threads of the frame loop")
    parser.add_argument("--skip-alone", action="store_true", help="skip measurement 2")
    parser.add_argument("--restart", action="store_true", help="also time a restart from the disk cache")
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))
    frame = synthetic_frame(height, width)
    print(
        f"torch threads {torch.get_num_threads()}, text threads {args.text_threads}, frame threads "
        f"{args.frame_threads}; {args.model} at short side {args.short_side}, {width}x{height}, templates "
        f"{args.templates}; {args.start!r} -> {args.to!r}"
    )

    alone = float("nan")
    if not args.skip_alone:
        segmenter = _segmenter(args, text_cache="")
        alone = _timed_change(segmenter, args.to)
        print(f"change alone: {alone:.2f} s")
        del segmenter

    with tempfile.TemporaryDirectory() as cache:
        segmenter = _segmenter(args, text_cache=cache)
        frame_done: list[float] = []
        stop = threading.Event()

        def frames() -> None:
            if args.frame_threads:
                torch.set_num_threads(args.frame_threads)
            while not stop.is_set():
                segmenter.segment(frame)
                frame_done.append(time.perf_counter())

        segmenter.segment(frame)  # warm-up
        loop = threading.Thread(target=frames)
        loop.start()
        while len(frame_done) < args.frames + 1:
            time.sleep(0.01)
        normal = float(np.median(np.diff(frame_done)))
        changed_at = time.perf_counter()
        concurrent = _timed_change(segmenter, args.to)
        done_at = time.perf_counter()
        labels_seen = len(segmenter.labels)
        time.sleep(2 * normal)
        stop.set()
        loop.join()
        times = np.array(frame_done)
        during = times[(times > changed_at) & (times <= done_at + normal)]
        gaps = np.diff(np.concatenate([[changed_at], during]))
        longest = float(gaps.max()) if len(gaps) else done_at - changed_at
        print(f"normal frame time (p50): {normal * 1000:.0f} ms")
        print(
            f"change beside the frame loop: {concurrent:.2f} s ({labels_seen} labels), {len(during)} frames "
            f"answered meanwhile, longest gap {longest * 1000:.0f} ms = {longest / normal:.2f} x the frame time"
        )
        if not args.skip_alone:
            print(f"change beside frames / change alone: {concurrent / alone:.2f}")

        if args.restart:
            if args.checkpoint is None:
                print("--restart needs --checkpoint: random weights are never cached on disk")
                return
            started = time.perf_counter()
            restarted = _segmenter(args, text_cache=cache, start=False)
            loaded = time.perf_counter() - started
            change = _timed_change(restarted, args.to)
            print(
                f"restart: model loaded in {loaded:.2f} s, then {args.to!r} ready in {change:.3f} s "
                f"({restarted.text_encoder.disk_hits} phrases from the disk cache, "
                f"{restarted.text_encoder.misses} encoded)"
            )


if __name__ == "__main__":
    main()
