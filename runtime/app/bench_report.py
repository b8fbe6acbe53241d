"""The benchmark's outputs: the printed table, `bench.csv` and the `bench.png` chart."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from runtime.files import atomic_write_image, atomic_write_text


def table(rows: list[dict]) -> str:
    header = (f"{'model':<22} {'backend':<12} {'prec':<5} {'bs':>3} {'p50':>7} {'p90':>7} {'p99':>7} {'img/s':>7} {'pre':>6} "
              f"{'infer':>7} {'post':>6} {'e2e/cmp':>7} {'x32 e2e':>7} {'x32 inf':>7} {'IoU32':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        s, lat = r["stages_ms"], r["latency_ms"]
        iou = f"{r['iou_vs_fp32']:.4f}" if r.get("iou_vs_fp32") is not None else "-"
        ratios = "".join(f" {r[k]:7.2f}" if k in r else f" {'-':>7}" for k in ("e2e_vs_fp32", "infer_vs_fp32"))
        lines.append(f"{r['model']:<22} {r['backend']:<12} {r['precision']:<5} {r['batch']:>3} {lat['p50']:7.2f} {lat['p90']:7.2f} "
                     f"{lat['p99']:7.2f} {r['throughput_ips']:7.1f} {s['preprocess']['mean']:6.2f} {s['infer']['p50']:7.2f} "
                     f"{s['postprocess']['mean']:6.2f} {r['e2e_over_compute']:7.2f}{ratios} {iou:>6}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["model", "backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips",
              "preprocess_ms", "infer_ms", "postprocess_ms", "h2d_ms", "compute_ms", "d2h_ms", "e2e_over_compute",
              "rss_mb", "e2e_vs_fp32", "infer_vs_fp32", "iou_vs_fp32", "iou_vs_truth"]
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fields)
    writer.writeheader()
    for r in rows:
        s = r["stages_ms"]
        writer.writerow({
            "model": r["model"], "backend": r["backend"], "precision": r["precision"], "batch": r["batch"],
            **{f"{k}_ms": r["latency_ms"][k] for k in ("p50", "p90", "p99", "mean")},
            "throughput_ips": r["throughput_ips"], "e2e_over_compute": r["e2e_over_compute"], "rss_mb": r["rss_mb"],
            **{f"{k}_ms": s[k]["mean"] for k in ("preprocess", "infer", "postprocess", "h2d", "compute", "d2h") if k in s},
            "e2e_vs_fp32": r.get("e2e_vs_fp32"), "infer_vs_fp32": r.get("infer_vs_fp32"),
            "iou_vs_fp32": r.get("iou_vs_fp32"), "iou_vs_truth": r.get("iou_vs_truth"),
        })
    atomic_write_text(path, handle.getvalue())


def write_chart(rows: list[dict], path: Path, title: str) -> None:
    """Horizontal bars: p50 end-to-end latency per model and batch, whisker to p90."""
    bar_h, left, width = 26, 260, 900
    height = 50 + bar_h * len(rows) + 30
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, title[:110], (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    top = max(r["latency_ms"]["p90"] for r in rows) or 1.0
    scale = (width - left - 90) / top
    colours = {"fp32": (180, 120, 60), "fp16": (60, 160, 60), "int8": (40, 110, 230)}
    for i, r in enumerate(rows):
        y = 45 + i * bar_h
        p50, p90 = r["latency_ms"]["p50"], r["latency_ms"]["p90"]
        cv2.rectangle(image, (left, y), (left + int(p50 * scale), y + bar_h - 8), colours.get(r["precision"], (120, 120, 120)), -1)
        cv2.line(image, (left + int(p50 * scale), y + (bar_h - 8) // 2), (left + int(p90 * scale), y + (bar_h - 8) // 2), (0, 0, 0), 1)
        cv2.putText(image, f"{r['model']} b{r['batch']}", (8, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{p50:.2f} ms", (left + int(p90 * scale) + 6, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "bar: p50 end-to-end latency (ms); line: to p90", (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (80, 80, 80), 1, cv2.LINE_AA)
    atomic_write_image(path, image)
