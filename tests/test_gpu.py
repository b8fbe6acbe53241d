"""On real hardware (`make gpu-test`): TensorRT engines and the pycuda data path, against ONNX Runtime.

Marked `gpu` (TensorRT + pycuda + a CUDA GPU; the pycuda-only ones, marked `cuda`, are in
tests/test_cuda.py). Elsewhere
they skip with the missing piece named; under `make gpu-test` (REQUIRE_GPU=1) they fail instead.
They need only the runtime set (numpy, OpenCV, ONNX Runtime, pytest + TensorRT, pycuda): the models
are the small ones shipped in tests/data (tools/make_test_models.py), or yours:
GPU_TEST_ONNX=/path/to/mymodel_fp32.onnx (its _fp16/_int8/_mask variants beside it where present).
None of these has run on a GPU yet (this project has had no device with TensorRT).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from build_engine.builder import BuildOptions, build, int8_for_typing
from conftest import unmarked_device_tests
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset
from runtime.errors import UserError
from runtime.factory import open_runner
from runtime.metrics import pooled_iou
from runtime.postprocess import output_to_mask

DATA = Path(__file__).resolve().parent / "data"
FP32 = Path(os.environ.get("GPU_TEST_ONNX") or DATA / "unet_fp32.onnx")
MIN_IOU = {"fp32": 0.999, "fp16": 0.99, "int8": 0.98}  # vs FP32 on ONNX Runtime, as in the accuracy report
gpu = pytest.mark.gpu


def trt_version():
    import tensorrt as trt

    return tuple(int(p) for p in trt.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def frames(model_present):
    with OnnxRunner(FP32) as runner:
        spec = runner.spec
    images, masks = make_dataset(24, spec.height, spec.width, split="test", seed=5)
    return list(images), masks


@pytest.fixture(scope="module")
def model_present():
    if not FP32.is_file():
        pytest.fail(f"{FP32} is missing: the shipped models are made by tools/make_test_models.py")


@pytest.fixture(scope="module")
def reference(frames):
    """FP32 probabilities on ONNX Runtime for the same frames."""
    from runtime.preprocess import preprocess_batch

    with OnnxRunner(FP32) as runner:
        return runner.infer(preprocess_batch(frames[0], runner.spec)) >= 0.5


def masks_of(runner, images):
    return np.concatenate([runner.infer_frames(images[i: i + 4]) for i in range(0, len(images), 4)])


def check_against_reference(runner, frames, reference, precision):
    out = masks_of(runner, frames[0])
    decided = out.astype(bool) if out.dtype == np.uint8 else out >= 0.5
    iou = pooled_iou(decided, reference)
    print(f"  {runner.describe()}: IoU vs ONNX Runtime FP32 {iou:.4f}")
    assert iou >= MIN_IOU[precision], f"{precision}: IoU vs FP32 {iou:.4f}"


def variant_exists(precision, output):
    name = FP32.name.replace("_fp32", f"_{precision}") if "_fp32" in FP32.name else FP32.name
    path = FP32.with_name(name)
    path = path.with_name(path.stem + ("_mask" if output == "mask" else "") + path.suffix)
    if not path.is_file():
        pytest.skip(f"{path} does not exist beside {FP32}")


# --- every --typing x precision, mask and probability outputs --------------------------------------

@gpu
@pytest.mark.parametrize("output", ["mask", "probabilities"])
@pytest.mark.parametrize("typing", ["auto", "strong", "weak"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnx_runtime(gpu_available, frames, reference, precision, typing, output, tmp_path):
    major = trt_version()[0]
    if (major == 8 and typing == "strong") or (major == 11 and typing == "weak"):
        pytest.skip(f"TensorRT {major} has no {typing} typing")
    variant_exists(precision if typing != "weak" else ("int8" if precision == "int8" else "fp32"), output)
    engine = tmp_path / f"unet_{precision}.engine"
    manifest = build(FP32, engine, BuildOptions(precision=precision, mode=typing, output=output, max_batch=4,
                                                timing_cache=tmp_path / "timing.cache"))
    assert manifest["output_kind"] == output and manifest["layers"]["gpu"]
    with open_runner(engine) as runner:
        assert runner.output_kind == ("mask" if output == "mask" else "probabilities")
        check_against_reference(runner, frames, reference, precision)


@gpu
@pytest.mark.parametrize("typing", ["strong", "weak"])
def test_qdq_engines_build_from_their_own_file_and_match_fp32(gpu_available, frames, reference, typing, tmp_path):
    """INT8 strongly typed from the FP16-based Q/DQ (shipped: unet_int8.onnx), weakly typed from the
    FP32-based one (unet_int8_weak.onnx): the file whose `unet.tensorrt_typing` says so, by the link."""
    major = trt_version()[0]
    if (typing == "weak" and major >= 11) or (typing == "strong" and major < 10):
        pytest.skip(f"TensorRT {major} has no {typing} typing")
    own = int8_for_typing(FP32, metadata.OUTPUT_PROBABILITIES, typing == "strong")
    if own is None:  # the shipped pair is checked on the CPU by tests/test_shipped_models.py
        (pytest.skip if os.environ.get("GPU_TEST_ONNX") else pytest.fail)(f"no INT8 variant of {FP32} for {typing} typing")
    if not os.environ.get("GPU_TEST_ONNX"):
        assert own == DATA / {"strong": "unet_int8.onnx", "weak": "unet_int8_weak.onnx"}[typing]
    manifest = build(FP32, tmp_path / "int8.engine", BuildOptions(precision="int8", mode=typing, max_batch=4))
    assert Path(manifest["onnx"]["path"]) == own and manifest["plan"]["strongly_typed"] == (typing == "strong")
    with open_runner(tmp_path / "int8.engine") as runner:
        check_against_reference(runner, frames, reference, "int8")


@gpu
def test_legacy_calibrator_and_its_keyed_cache(gpu_available, frames, reference, tmp_path, capsys):
    if trt_version()[0] >= 11:
        pytest.skip("TensorRT 11 removed the legacy calibrators")
    options = BuildOptions(precision="int8", calibrator=True, output="probabilities", calibration_count=64, opt_batch=4,
                           max_batch=4, calibration_cache=tmp_path / "unet_int8.calib.cache")
    first = build(FP32, tmp_path / "a.engine", options)
    cache = Path(first["calibration"]["cache"])
    assert cache.is_file() and cache.name.startswith("unet_int8.calib-") and first["calibration"]["cache_key"]["tensorrt"]
    build(FP32, tmp_path / "b.engine", options)
    assert "reusing calibration cache" in capsys.readouterr().out
    with open_runner(tmp_path / "b.engine") as runner:
        check_against_reference(runner, frames, reference, "int8")


# --- version compatibility, the lean runtime, host code ---------------------------------------------

@gpu
def test_version_compatible_engine_needs_allow_host_code_and_loads_in_lean(gpu_available, frames, reference, tmp_path,
                                                                          monkeypatch):
    if trt_version() < (8, 6):
        pytest.skip("version-compatible engines need TensorRT 8.6+")
    engine = tmp_path / "unet_fp16.engine"
    build(FP32, engine, BuildOptions(precision="fp16", version_compatible=True, max_batch=4))
    with pytest.raises(UserError, match="--allow-host-code"):
        open_runner(engine)
    with open_runner(engine, allow_host_code=True) as runner:
        check_against_reference(runner, frames, reference, "fp16")
    try:
        import tensorrt
        import tensorrt_lean
    except ImportError:
        pytest.skip("tensorrt_lean is not installed: the lean-runtime half of this test did not run")
    if tensorrt_lean.__version__ != tensorrt.__version__:
        pytest.skip(f"tensorrt_lean {tensorrt_lean.__version__} loads only plans of the same version ({tensorrt.__version__})")
    import runtime.backends.trt as trt_backend

    monkeypatch.setattr(trt_backend, "import_trt_runtime", lambda: (tensorrt_lean, True))
    with open_runner(engine, allow_host_code=True) as runner:
        assert runner.backend == "tensorrt_lean"
        check_against_reference(runner, frames, reference, "fp16")


# --- DLA -------------------------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_dla_engine_reports_where_layers_run(gpu_available, frames, reference, precision, tmp_path):
    import tensorrt as trt

    cores = trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores
    if cores == 0:
        pytest.skip("this device has no DLA (only AGX Orin / Orin NX / Xavier do)")
    if trt_version()[0] >= 11:
        pytest.skip("DLA builds are refused on TensorRT 11 (see build_engine/precision.py)")
    engine = tmp_path / f"unet_{precision}_dla.engine"
    manifest = build(FP32, engine, BuildOptions(precision=precision, dla_core=0, max_batch=4, opt_batch=1))
    assert manifest["layers"]["dla"], manifest["layers"]  # something really runs on the DLA
    assert all(v["min"] == v["opt"] == v["max"] for v in manifest["profile"].values())
    with open_runner(engine) as runner:
        check_against_reference(runner, frames, reference, precision)


# --- dynamic size ----------------------------------------------------------------------------------

@gpu
def test_dynamic_size_engine(gpu_available, frames, reference, tmp_path):
    dynamic = DATA / "dynamic" / "unet_fp32.onnx"
    if os.environ.get("GPU_TEST_ONNX") or not dynamic.is_file():
        pytest.skip("no dynamic-size ONNX for this model (tests/data/dynamic/ is for the shipped one)")
    engine = tmp_path / "unet_fp32_dynamic.engine"
    manifest = build(dynamic, engine, BuildOptions(precision="fp32", output="probabilities", max_batch=4, min_size=32,
                                                   max_size=128))
    assert manifest["input_spec"]["height"] == 64 and manifest["profile"]["image"]["max"][2] == 128
    with open_runner(engine) as runner:
        assert (runner.spec.height, runner.spec.width) == (64, 64)
        check_against_reference(runner, frames, reference, "fp32")


# --- the timing cache ------------------------------------------------------------------------------

@gpu
def test_timing_cache_reused_then_stale_cache_replaced(gpu_available, tmp_path, capsys):
    cache = tmp_path / "timing.cache"
    options = BuildOptions(precision="fp16", max_batch=2, timing_cache=cache)
    assert build(FP32, tmp_path / "a.engine", options)["flags"]["timing_cache_status"] == "new"
    assert build(FP32, tmp_path / "b.engine", options)["flags"]["timing_cache_status"] == "reused"
    cache.write_bytes(b"a timing cache from another GPU or TensorRT version" * 64)
    capsys.readouterr()
    assert build(FP32, tmp_path / "c.engine", options)["flags"]["timing_cache_status"] == "mismatch"
    assert len([l for l in capsys.readouterr().out.splitlines() if "does not match this GPU" in l]) == 1
    assert not cache.read_bytes().startswith(b"a timing cache from another")  # the fresh cache replaced it


# --- runner modes, threads, the pipeline, open/close ---------------------------------------------------

@pytest.fixture(scope="module")
def fp16_engine(gpu_available, tmp_path_factory):
    engine = tmp_path_factory.mktemp("engines") / "unet_fp16.engine"
    build(FP32, engine, BuildOptions(precision="fp16", max_batch=4))
    return engine


@gpu
@pytest.mark.parametrize("buffer_sets", [1, 2])
@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize("mapped_memory", [False, True])
def test_every_runner_mode_gives_the_same_masks(fp16_engine, frames, reference, buffer_sets, cuda_graphs, mapped_memory):
    with open_runner(fp16_engine, buffer_sets=buffer_sets, cuda_graphs=cuda_graphs, mapped_memory=mapped_memory) as runner:
        if mapped_memory and not runner.mode["mapped_memory"]:
            pytest.skip("discrete GPU: mapped (zero-copy) memory is used on integrated (Jetson) GPUs only")
        check_against_reference(runner, frames, reference, "fp16")
        # overlapped: submit ahead, collect in order, same result as synchronous
        images, outputs = frames[0][:8], []
        for image in images:
            if runner.in_flight == buffer_sets:
                outputs.append(runner.collect())
            runner.submit([image])
        while runner.in_flight:
            outputs.append(runner.collect())
        np.testing.assert_array_equal(np.concatenate(outputs), masks_of(runner, images))
        print(f"  mode {runner.mode}; notes {runner.notes}; compute-only {runner.compute_only_ms(50):.3f} ms")
        if cuda_graphs and not runner.notes:
            assert runner.mode["graphs"] == "cuda-graph"


@gpu
def test_runner_works_from_a_worker_thread(fp16_engine, frames):
    results = {}
    with open_runner(fp16_engine) as runner:
        thread = threading.Thread(target=lambda: results.setdefault("y", runner.infer_frames(frames[0][:2])))
        thread.start()
        thread.join(60)
    assert results["y"].shape[0] == 2


@gpu
def test_threaded_pipeline_300_frames_matches_onnx_runtime(fp16_engine):
    from runtime.app.pipeline import Pipeline
    from runtime.app.sinks import FrameSink
    from runtime.app.sources import SyntheticSource

    figures = {}
    for name, model in (("tensorrt", fp16_engine), ("onnxruntime", FP32)):
        with open_runner(model) as runner, SyntheticSource(300, 640, 480) as source:
            stats = Pipeline(source, runner, FrameSink()).run()
        figures[name] = stats
        print(f"  pipeline {name}: {stats.fps:.1f} FPS over 300 frames at 640x480, IoU vs truth {stats.iou:.4f}")
    assert figures["tensorrt"].frames_out == 300
    assert abs(figures["tensorrt"].iou - figures["onnxruntime"].iou) < 0.01


@gpu
def test_50_open_close_cycles_keep_device_memory_flat(fp16_engine, frames):
    import pycuda.driver as cuda

    from runtime.backends.cuda_mem import CudaContext

    context = CudaContext()

    def free_bytes():
        with context:
            return context.memory_info()[0]

    with open_runner(fp16_engine) as runner:  # warm: lazy CUDA/TensorRT allocations happen once
        runner.infer_frames(frames[0][:1])
    before = free_bytes()
    for _ in range(50):
        with open_runner(fp16_engine) as runner:
            runner.infer_frames(frames[0][:1])
        assert cuda.Context.get_current() is None  # every push popped
    after = free_bytes()
    print(f"  free device memory before {before / 2**20:.1f} MiB, after 50 cycles {after / 2**20:.1f} MiB")
    assert before - after < 16 * 2**20


def test_gpu_tests_are_all_marked():
    """Every test here but this one carries `gpu` or `cuda`, so `make test` never runs device code."""
    assert not unmarked_device_tests(__name__), unmarked_device_tests(__name__)
