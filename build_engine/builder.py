"""ONNX -> TensorRT engine for TensorRT 8.5/8.6, 10.x and 11.x, with a sidecar manifest.

Written against the documented Python API of each version (../shared/tensorrt-notes.md);
checked without a GPU by mypy over the 10.13 stubs and a test that introspects the real
11.x lean bindings. `make gpu-test` confirms it on real hardware.
"""
from __future__ import annotations

import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from build_engine.precision import PRECISIONS, BuildPlan, parse_version, plan_precision
from runtime.errors import UserError
from runtime.files import atomic_write_bytes
from runtime.files import sha256_file
from runtime.manifest import write_manifest

if TYPE_CHECKING:  # mypy checks every TensorRT name below against the 10.13 stubs
    import tensorrt as trt

INSTALL_HINT = (
    "TensorRT's Python package is not installed, so no engine can be built here. "
    "Desktop: `pip install tensorrt` (CUDA 12/13 wheels from NVIDIA) and pycuda; "
    "Jetson: `sudo apt install python3-libnvinfer python3-libnvinfer-dev` (JetPack) and a venv with --system-site-packages. "
    "The ONNX models (make onnx) are ready and run on the CPU with ONNX Runtime"
)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    if not hasattr(trt, "__version__"):  # an empty namespace package (e.g. stubs) is not TensorRT
        raise UserError(INSTALL_HINT)
    return trt


@dataclass
class BuildOptions:
    precision: str = "fp16"
    mode: str = "auto"
    calibrator: bool = False
    calibration_cache: Path | None = None
    calibration_source: str = "synthetic"
    calibration_count: int = 300
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    min_size: int | None = None  # only for ONNX with dynamic height/width
    max_size: int | None = None
    workspace_mib: int = 1024
    optimization_level: int = 3
    timing_cache: Path | None = None
    dla_core: int | None = None
    version_compatible: bool = False


def make_progress_monitor() -> "trt.IProgressMonitor":
    """A TensorRT IProgressMonitor (10.x+) that prints the build phases that take over a second."""
    import tensorrt as trt

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._started[phase_name] = time.time()

        def step_complete(self, phase_name, step):
            return True  # keep building

        def phase_finish(self, phase_name):
            if phase_name in self._started and time.time() - self._started[phase_name] > 1.0:
                print(f"  {phase_name}: {time.time() - self._started.pop(phase_name):.1f} s", flush=True)

    return _Monitor()


def network_flags(plan: BuildPlan) -> int:
    import tensorrt as trt

    flags = 0
    if plan.explicit_batch_flag:  # 8.x: the ONNX parser needs explicit batch; removed in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed and parse_version(trt.__version__)[0] == 10:  # 11.x: implicit, flag deprecated
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def parse_onnx(network: "trt.INetworkDefinition", logger: "trt.ILogger", onnx_path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        for error in errors:
            print(f"  parser: {error}", file=sys.stderr)
        raise UserError(f"TensorRT could not parse {onnx_path} ({len(errors)} error(s) above, first: {errors[0] if errors else '?'})")


def add_profile(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
                options: BuildOptions) -> dict:
    """One optimization profile for the dynamic batch (and height/width if dynamic)."""
    if not options.min_batch <= options.opt_batch <= options.max_batch:
        raise UserError(f"need min-batch <= opt-batch <= max-batch, got {options.min_batch}/{options.opt_batch}/{options.max_batch}")
    profile = builder.create_optimization_profile()
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        lo, opt, hi = list(dims), list(dims), list(dims)
        if dims[0] == -1:
            lo[0], opt[0], hi[0] = options.min_batch, options.opt_batch, options.max_batch
        for axis in (2, 3):
            if dims[axis] == -1:
                if options.min_size is None or options.max_size is None:
                    raise UserError("the ONNX has dynamic height/width: give --min-size and --max-size (multiples of 16)")
                lo[axis], opt[axis], hi[axis] = options.min_size, options.max_size, options.max_size
        profile.set_shape(tensor.name, lo, opt, hi)
        shapes[tensor.name] = {"min": lo, "opt": opt, "max": hi}
    config.add_optimization_profile(profile)
    return {"profile": profile, "shapes": shapes}


def load_timing_cache(config: "trt.IBuilderConfig", path: Path | None) -> bool:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return bool(blob)


def save_timing_cache(config: "trt.IBuilderConfig", path: Path | None) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    except OSError as exc:  # a cache that cannot be saved costs the next build time, not this one
        print(f"warning: timing cache not saved to {path} ({exc.strerror}); the next build will re-time every layer",
              file=sys.stderr)


def configure(builder: "trt.Builder", config: "trt.IBuilderConfig", plan: BuildPlan, options: BuildOptions) -> None:
    import tensorrt as trt

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if hasattr(config, "builder_optimization_level"):  # 8.6+
        config.builder_optimization_level = options.optimization_level
    if hasattr(trt, "IProgressMonitor"):  # 10.x+
        config.progress_monitor = make_progress_monitor()
    if options.version_compatible:
        if parse_version(trt.__version__) < (8, 6):
            raise UserError("--version-compatible needs TensorRT 8.6 or newer")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.dla_core is not None:
        if parse_version(trt.__version__)[0] >= 11:
            raise UserError("DLA with TensorRT 11 is limited to AGX Orin on JetPack 7.2.2+ and unconfirmed here; build for the GPU")
        if options.dla_core >= builder.num_DLA_cores:
            raise UserError(f"DLA core {options.dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # ConvTranspose and others fall back to the GPU
        if plan.builder_flags == ():  # DLA runs FP16 or INT8 only
            config.set_flag(trt.BuilderFlag.FP16)


def onnx_variant_path(onnx_path: Path, plan: BuildPlan) -> Path:
    """The ONNX the plan needs: unet_fp32/fp16/int8.onnx beside the one given."""
    stem = onnx_path.stem
    for precision in PRECISIONS:
        if stem.endswith(f"_{precision}"):
            wanted = onnx_path.with_name(stem[: -len(precision)] + plan.onnx_variant + onnx_path.suffix)
            break
    else:
        wanted = onnx_path
    if not wanted.is_file():
        raise UserError(f"{plan.how} needs {wanted}, which does not exist; run `make onnx`")
    return wanted


def build(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions) -> dict:
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX model {onnx_path} does not exist; run `make onnx`")
    import_tensorrt()  # the one clear message when TensorRT is missing
    import tensorrt as trt

    from runtime.backends.cuda_mem import CudaContext

    plan = plan_precision(trt.__version__, options.precision, options.mode, options.calibrator)
    source = onnx_variant_path(onnx_path, plan)
    print(f"building {engine_path.name}: {plan.how}; parsing {source}", flush=True)
    started = time.time()
    gpu = CudaContext()
    try:
        with gpu:
            serialized, io, profile, calibration, cache_reused = _build_in_context(plan, source, options)
        gpu_name, gpu_cc = gpu.name, gpu.compute_capability
    finally:
        gpu.release()
    try:
        atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    except OSError as exc:
        raise UserError(f"cannot write {engine_path} ({exc.strerror}); choose a writable --out") from exc
    manifest = {
        "engine": engine_path.name,
        "tensorrt": {"version": trt.__version__, "version_compatible": options.version_compatible,
                     "hardware_compatible": False},
        "gpu": {"name": gpu_name, "compute_capability": gpu_cc},
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "precision": options.precision,
        "precision_how": plan.how,
        "plan": asdict(plan),
        "onnx": {"path": str(source), "sha256": sha256_file(source)},
        "io": io,
        "profile": profile["shapes"],
        "calibration": calibration,
        "flags": {"workspace_mib": options.workspace_mib, "optimization_level": options.optimization_level,
                  "dla_core": options.dla_core, "timing_cache": str(options.timing_cache) if options.timing_cache else None,
                  "timing_cache_reused": cache_reused},
        "build_seconds": round(time.time() - started, 1),
    }
    write_manifest(engine_path, manifest)
    print(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) and its manifest in {manifest['build_seconds']} s")
    return manifest


def _build_in_context(plan: BuildPlan, source: Path, options: BuildOptions):
    """Parse, configure and build with the CUDA context current; returns the plan and its facts."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(plan))
    parse_onnx(network, logger, source)
    config = builder.create_builder_config()
    configure(builder, config, plan, options)
    profile = add_profile(builder, network, config, options)
    cache_reused = load_timing_cache(config, options.timing_cache)
    calibration = None
    with ExitStack() as owned:  # the calibrator's device buffer is freed on every path
        if plan.legacy_calibrator:
            from calibration.trt_calibrator import attach_entropy_calibrator

            calibration, free_calibrator = attach_entropy_calibrator(config, profile["profile"], source, options)
            owned.callback(free_calibrator)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (its log above says why)")
    save_timing_cache(config, options.timing_cache)
    return serialized, describe_io(serialized, logger), profile, calibration, cache_reused


def describe_io(serialized: "trt.IHostMemory", logger: "trt.ILogger") -> list[dict]:
    """Names, dtypes and shapes of the engine's I/O, read back from the engine itself."""
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise UserError("TensorRT could not read back the engine it just built (see its log)")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io.append({"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                   "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1], "shape": list(engine.get_tensor_shape(name))})
    return io
