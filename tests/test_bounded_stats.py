"""Issue 10, bounded memory: per-frame statistics live in fixed-size reservoirs whose percentiles
stay right however long the run; the soak benchmark runs and reports resident memory."""
import numpy as np
import pytest

from runtime.app.soak import soak
from runtime.app.stats import Reservoir, RunStats, percentiles
from runtime.backends.onnxrt import OnnxRunner


def test_a_reservoir_keeps_fixed_memory_and_exact_count_mean_and_last():
    reservoir = Reservoir(capacity=1000)
    values = np.random.default_rng(1).lognormal(2.0, 0.6, 200_000)
    for value in values:
        reservoir.append(value)
    assert len(reservoir.samples()) == 1000 and reservoir.samples().nbytes == 8000
    assert len(reservoir) == reservoir.count == 200_000
    assert reservoir.mean == pytest.approx(values.mean(), rel=1e-9) and reservoir[-1] == values[-1]


def test_reservoir_percentiles_follow_a_drifting_stream():
    # A latency that creeps up over a long run: keeping only the first (or last) N samples would
    # report p50 near the start (or end); a uniform sample reports the whole run.
    values = np.linspace(0.0, 100.0, 300_000) + np.random.default_rng(2).normal(0, 1, 300_000)
    reservoir = Reservoir(capacity=4096)
    for value in values:
        reservoir.append(value)
    exact = dict(zip(("p50", "p90", "p99"), np.percentile(values, [50, 90, 99])))
    got = percentiles(reservoir)
    for key in ("p50", "p90", "p99"):
        assert got[key] == pytest.approx(exact[key], abs=2.5), key  # within 2.5 % of the range
    assert got["mean"] == pytest.approx(values.mean(), abs=1e-3)


def test_run_statistics_stay_the_same_size_over_a_long_run():
    stats = RunStats()
    held = None
    for frame in range(60_000):  # about half an hour at 30 FPS
        for stage in stats.stage_ms:
            stats.stage_ms[stage].append(1.0 + frame % 7)
        stats.latency_ms.append(20.0 + frame % 11)
        stats.frame_ious.append(0.9)
        if frame == 10_000:
            held = sum(r.samples().nbytes for r in [*stats.stage_ms.values(), stats.latency_ms, stats.frame_ious])
    assert sum(r.samples().nbytes for r in [*stats.stage_ms.values(), stats.latency_ms, stats.frame_ious]) == held
    summary = stats.summary()
    assert summary["latency_ms"]["p50"] == pytest.approx(25.0, abs=1.0) and summary["mean_frame_iou"] == 0.9


def test_the_soak_benchmark_streams_and_reports_memory(tiny_model_dir):
    lines = []
    with OnnxRunner(tiny_model_dir / "unet_fp32.onnx", threads=1) as runner:
        result = soak(runner, seconds=2.0, width=96, height=64, report_every_s=0.5, say=lines.append)
    assert result["frames"] > 0 and result["rss_start_mb"] > 0 and result["rss_end_mb"] > 0
    assert len(result["samples"]) >= 3 and "RSS start" in lines[-1]
