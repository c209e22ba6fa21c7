"""The benchmark report as a picture: latency against frame size, ours and the naive baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_latency_vs_size(report: dict[str, Any], path: Path) -> None:
    """Latency p50 against input pixels per setting, and the naive baseline, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in report["rows"]:
        engine = " ONNX Runtime" if "engine" in row else ""
        label = f"ours {row['method']} {row['device']} {row['precision']}{engine}, {row['queries']} queries"
        series.setdefault(label, []).append((row["size"][0] * row["size"][1] / 1e6, row["latency_ms"]["p50"]))
    for entry in report["naive"]:
        megapixels = entry["size"][0] * entry["size"][1] / 1e6
        series.setdefault(f"naive maskclip {entry['device']} fp32", []).append((megapixels, entry["latency_ms"]["p50"]))
        series.setdefault(f"naive maskclip {entry['device']} fp32, text not re-encoded", []).append(
            (megapixels, entry["latency_without_text_ms"]["p50"])
        )
    for label, points in series.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xlabel("frame size (megapixels)")
    axes.set_ylabel("latency p50 (ms)")
    axes.set_yscale("log")
    axes.set_title(f"{report['model']}, short side {report['short_side']}, {report['machine']['cpu']}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
