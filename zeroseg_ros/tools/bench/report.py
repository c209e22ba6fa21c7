"""The benchmark report as text: one progress line per measured row, and the fixed-width table."""

from __future__ import annotations

from typing import Any

from zeroseg_ros.tools.bench.measure import CORE_STAGES

TABLE_COLUMNS = (*CORE_STAGES, "overlay", "ros_message")


def format_row(row: dict[str, Any]) -> str:
    width, height = row["size"]
    return (
        f"{row['device']:<7} {row['precision']:<5} {row['method']:<9} {row['queries']:>4} queries {width}x{height:<5} "
        f"-> {row['model_input'][1]}x{row['model_input'][0]}: p50 {row['latency_ms']['p50']:.1f} ms, "
        f"{row['fps']:.1f} fps"
    )


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table: stage p50/p95, latency, fps, memory, speed-up."""
    header = ["device", "prec", "method", "queries", "frame", "input"]
    header += [f"{stage} p50/p95" for stage in TABLE_COLUMNS]
    header += ["latency p50/p95", "fps", "rss MB", "gpu MB", "x naive (no text)"]
    lines = []
    for row in report["rows"]:
        stages = row["stages_ms"]
        cells = [
            row["device"],
            row["precision"],
            row["method"] + (" +engine" if "engine" in row else " +onednn" if row.get("onednn") else ""),
            str(row["queries"]),
            "{}x{}".format(*row["size"]),
            f"{row['model_input'][1]}x{row['model_input'][0]}",
        ]
        cells += [f"{stages[s]['p50']:.1f}/{stages[s]['p95']:.1f}" if s in stages else "n/a" for s in TABLE_COLUMNS]
        cells += [
            f"{row['latency_ms']['p50']:.1f}/{row['latency_ms']['p95']:.1f}",
            f"{row['fps']:.1f}",
            f"{row['host_rss_peak_mb']:.0f}",
            f"{row['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in row else "-",
            f"{row['speedup_vs_naive']:.1f} ({row['speedup_vs_naive_without_text']:.1f})"
            if "speedup_vs_naive" in row
            else "-",
        ]
        lines.append(cells)
    for entry in report["naive"]:
        stages = entry["stages_ms"]
        cells = [entry["device"], "fp32", "naive", "all", "{}x{}".format(*entry["size"]), "same"]
        cells += [
            f"{stages['preprocess']['p50']:.1f}/{stages['preprocess']['p95']:.1f}",
            "{:.1f}/{:.1f} (+text {:.1f})".format(
                stages["encode_image"]["p50"], stages["encode_image"]["p95"], stages["encode_text"]["p50"]
            ),
            f"{stages['similarity']['p50']:.1f}/{stages['similarity']['p95']:.1f}",
            f"{stages['postprocess']['p50']:.1f}/{stages['postprocess']['p95']:.1f}",
            "-",
            "-",
            f"{entry['latency_ms']['p50']:.1f}/{entry['latency_ms']['p95']:.1f}",
            f"{entry['fps']:.2f}",
            f"{entry['host_rss_peak_mb']:.0f}",
            "-",
            "1.0",
        ]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    out += [f"note: {note}" for note in report["notes"]]
    return "\n".join(out)
