"""On real hardware (`make gpu-test`): TensorRT engines against ONNX Runtime on the same frames.

These need TensorRT, pycuda and a CUDA GPU; on other machines they skip (and under
`make gpu-test` they fail) with the missing piece named. Never run in CI.
"""
import numpy as np
import pytest

from build_engine.builder import BuildOptions, build
from runtime.metrics import pooled_iou
from runtime.preprocess import InputSpec
from runtime.backends.onnxrt import OnnxRunner
from runtime.factory import open_runner
from runtime.data.synthetic import make_dataset
from runtime.preprocess import preprocess_batch

pytestmark = pytest.mark.gpu

MIN_IOU = {"fp32": 0.999, "fp16": 0.99, "int8": 0.98}


@pytest.fixture(scope="module")
def onnx_variants(gpu_available, tiny_model_dir):
    from calibration.dataset import synthetic_set
    from calibration.fp16 import convert_fp16
    from calibration.qdq import quantize_int8

    spec = InputSpec(64, 64, 1)
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    convert_fp16(fp32, tiny_model_dir / "unet_fp16.onnx")
    quantize_int8(fp32, tiny_model_dir / "unet_int8.onnx", synthetic_set(64, spec, "calib").tensors(spec))
    return tiny_model_dir


@pytest.fixture(scope="module")
def frames():
    images, _ = make_dataset(24, 64, split="test")
    return preprocess_batch(images, InputSpec(64, 64, 1))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnx_runtime(onnx_variants, frames, precision, tmp_path):
    engine = tmp_path / f"unet_{precision}.engine"
    manifest = build(onnx_variants / "unet_fp32.onnx", engine, BuildOptions(precision=precision, max_batch=8,
                                                                           timing_cache=tmp_path / "timing.cache"))
    assert manifest["precision"] == precision and engine.is_file()
    with OnnxRunner(onnx_variants / "unet_fp32.onnx") as reference, open_runner(engine) as runner:
        assert runner.backend.startswith("tensorrt") and runner.spec == reference.spec
        expected = reference.infer(frames)
        got = runner.infer(frames)  # 24 > max batch 8: runs in chunks
        assert got.shape == expected.shape and got.dtype == np.float32
        iou = pooled_iou(got > 0.5, expected > 0.5)
        assert iou >= MIN_IOU[precision], f"{precision}: IoU vs FP32 {iou:.4f}"


def test_buffers_are_reused_and_stages_timed(onnx_variants, frames, tmp_path):
    engine = tmp_path / "unet_fp16.engine"
    build(onnx_variants / "unet_fp32.onnx", engine, BuildOptions(precision="fp16", max_batch=4))
    with open_runner(engine) as runner:
        pointers = (runner._input.pointer, runner._output.pointer)
        for i in range(5):
            runner.infer(frames[i : i + 1 + i % 3])
            assert (runner._input.pointer, runner._output.pointer) == pointers
            timings = runner.last_timings_ms
            assert set(timings) == {"h2d", "compute", "d2h"}
            assert all(0 < t < 1000 for t in timings.values())


def test_runner_works_from_a_worker_thread(onnx_variants, frames, tmp_path):
    import threading

    engine = tmp_path / "unet_fp16.engine"
    build(onnx_variants / "unet_fp32.onnx", engine, BuildOptions(precision="fp16", max_batch=2))
    results = {}
    with open_runner(engine) as runner:
        thread = threading.Thread(target=lambda: results.setdefault("y", runner.infer(frames[:2])))
        thread.start()
        thread.join()
    assert results["y"].shape == (2, 1, 64, 64)
