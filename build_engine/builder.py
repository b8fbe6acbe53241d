"""ONNX -> TensorRT engine for TensorRT 8.5/8.6, 10.x and 11.x, with a sidecar manifest.

Written against NVIDIA's documented Python API of each version;
checked without a GPU by mypy over the 10.13 stubs (argument types on), by tests that hold each
name against a per-version table (build_engine/trt_api.py) and the real 11.x lean bindings, and
by stand-in runs of the configuration for 8.5, 8.6, 10.3 and 11.4. `make gpu-test` confirms it on
real hardware; it has not run on a GPU yet.
"""
from __future__ import annotations

import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from build_engine.precision import BuildPlan, plan_precision
from build_engine.trt_config import (BuildOptions, add_profile, configure, inspect_layers, load_timing_cache,
                                     network_flags, placement_line, save_timing_cache)
from runtime import metadata, naming
from runtime.errors import UserError
from runtime.files import atomic_write_bytes, sha256_file
from runtime.manifest import write_manifest

if TYPE_CHECKING:  # mypy checks every TensorRT name below against the 10.13 stubs
    import tensorrt as trt

INSTALL_HINT = (
    "TensorRT's Python package is not installed, so no engine can be built here. "
    "Desktop: `pip install tensorrt` (CUDA 12/13 wheels from NVIDIA) and pycuda; "
    "Jetson: `sudo apt install python3-libnvinfer python3-libnvinfer-dev` (JetPack) and a venv with --system-site-packages. "
    "The ONNX models (make onnx) are ready and run on the CPU with ONNX Runtime"
)
OUTPUTS = ("mask", "probabilities")
__all__ = ["BuildOptions", "build", "describe_io", "import_tensorrt", "onnx_variant_path", "parse_onnx"]


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    if not hasattr(trt, "__version__"):  # an empty namespace package (e.g. stubs) is not TensorRT
        raise UserError(INSTALL_HINT)
    return trt


def fp32_source(onnx_path: Path) -> Path:
    """The FP32 probability ONNX that `onnx_path` is, or that it records as its source
    (`unet.source_sha256`). An ONNX without precision metadata (made by another tool) is taken as FP32.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX model {onnx_path} does not exist; copy it from the workstation (or run `make onnx` there)")
    meta = metadata.read_onnx_metadata(onnx_path)
    precision = metadata.precision_of(meta)
    source = meta.get(metadata.SOURCE_SHA256)
    if precision in (None, "fp32") and source is None and metadata.output_kind_of(meta) == metadata.OUTPUT_PROBABILITIES:
        return onnx_path
    found = [e.path for e in naming.index_models(onnx_path.parent)  # FP32 ones, and ones without metadata
             if not e.is_engine and e.precision in ("fp32", "unknown") and e.output_kind == metadata.OUTPUT_PROBABILITIES
             and source is not None and sha256_file(e.path) == source]
    if not found:
        raise UserError(f"{onnx_path} is the {precision} variant of {meta.get(metadata.SOURCE_MODEL, 'an FP32 model')}, which is "
                        f"not beside it; copy that FP32 ONNX into {onnx_path.parent} and pass it with --onnx")
    return found[0]


def int8_for_typing(fp32: Path, output_kind: str, strongly_typed: bool) -> Optional[Path]:
    """The INT8 Q/DQ variant made for this typing mode (`unet.tensorrt_typing`), if there is one:
    strongly typed builds take the FP16-based Q/DQ (opset 19), weakly typed ones (8.5/8.6, --typing
    weak, DLA) the FP32-based one (opset 17, which 8.x parses); see calibration/qdq.py."""
    wanted = "strong" if strongly_typed else "weak"
    found = [path for path in naming.linked_variants(fp32, "int8", ("tensorrt", "any"), output_kind=output_kind)
             if metadata.read_onnx_metadata(path).get(metadata.TENSORRT_TYPING) == wanted]
    return sorted(found, key=lambda p: len(p.name))[0] if found else None


def onnx_variant_path(onnx_path: Path, plan: BuildPlan, output: str = "probabilities") -> Path:
    """The ONNX the plan needs: the variant of `onnx_path`'s FP32 model at the plan's precision and
    output kind, found by the link each variant records to that model and by its metadata (precision,
    output kind), never by its file name."""
    if output not in OUTPUTS:
        raise UserError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    fp32 = fp32_source(onnx_path)
    kind = metadata.OUTPUT_MASK if output == "mask" else metadata.OUTPUT_PROBABILITIES
    wanted = naming.find_variant(fp32, plan.onnx_variant, ("tensorrt", "any"), output_kind=kind)
    if wanted is None:
        default = naming.variant_path(fp32, plan.onnx_variant)
        name = naming.mask_variant_path(default).name if output == "mask" else default.name
        extra = " or pass --output probabilities" if output == "mask" else ""
        raise UserError(f"{plan.how} needs the {plan.onnx_variant}{' mask' if output == 'mask' else ''} variant of {fp32.name} "
                        f"(e.g. {name}, made from this very file), and none is in {fp32.parent}; copy it from the "
                        f"workstation (or run `make onnx` there){extra}")
    if plan.onnx_variant == "int8":
        wanted = int8_for_typing(fp32, kind, plan.strongly_typed) or wanted
    return wanted


def input_spec_of(onnx_path: Path) -> Optional[Dict[str, int]]:
    """The frame size the model was trained on (ONNX metadata via ONNX Runtime), for dynamic-size engines."""
    try:
        from runtime.backends.onnxrt import OnnxRunner

        with OnnxRunner(onnx_path) as runner:
            spec = runner.spec
    except (ImportError, UserError):
        return None
    return {"height": spec.height, "width": spec.width, "channels": spec.channels}


def build(onnx_path: Union[str, Path], engine_path: Union[str, Path], options: BuildOptions) -> dict:
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    fp32 = fp32_source(onnx_path)
    import_tensorrt()  # the one clear message when TensorRT is missing
    import tensorrt as trt

    from runtime.backends.cuda_mem import CudaContext

    plan = plan_precision(trt.__version__, options.precision, options.mode, options.calibrator,
                          dla=options.dla_core is not None)
    source = onnx_variant_path(onnx_path, plan, options.output)
    print(f"building {engine_path.name}: {plan.how}; parsing {source}", flush=True)
    started = time.time()
    gpu = CudaContext()
    with gpu:
        facts = _build_in_context(plan, source, options)
    try:
        atomic_write_bytes(engine_path, bytes(memoryview(facts.pop("serialized"))))
    except OSError as exc:
        raise UserError(f"cannot write {engine_path} ({exc.strerror}); choose a writable --out") from exc
    manifest = {
        "engine": engine_path.name,
        "tensorrt": {"version": trt.__version__, "version_compatible": options.version_compatible,
                     "hardware_compatible": False},
        "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability},
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "precision": options.precision,
        "precision_how": plan.how,
        "plan": asdict(plan),
        "onnx": {"path": str(source), "sha256": sha256_file(source), "source_sha256": sha256_file(fp32)},
        # The model's preprocessing contract and threshold, read back by the runtime (runtime.manifest.apply_contract).
        "contract": metadata.contract_entries(metadata.read_onnx_metadata(source)),
        "output_kind": options.output,
        "input_spec": input_spec_of(source),
        "io": facts["io"],
        "profile": facts["profile"]["shapes"],
        "profile_notes": facts["profile"]["notes"],
        "calibration": facts["calibration"],
        "layers": facts["layers"],
        "flags": {"workspace_mib": options.workspace_mib, "optimization_level": options.optimization_level,
                  "dla_core": options.dla_core, "timing_cache": str(options.timing_cache) if options.timing_cache else None,
                  "timing_cache_status": facts["timing_cache"]},
        "build_seconds": round(time.time() - started, 1),
    }
    write_manifest(engine_path, manifest)
    print(f"wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) and its manifest in {manifest['build_seconds']} s")
    return manifest


def _build_in_context(plan: BuildPlan, source: Path, options: BuildOptions) -> Dict[str, Any]:
    """Parse, configure and build with the CUDA context current; returns the plan and its facts."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(plan))
    parse_onnx(network, logger, source)
    config = builder.create_builder_config()
    configure(builder, config, plan, options)
    profile = add_profile(builder, network, config, options, dla=plan.dla)
    cache_status = load_timing_cache(config, options.timing_cache)
    attach = None
    if plan.legacy_calibrator:
        from calibration.trt_calibrator import attach_entropy_calibrator

        def attach():
            return attach_entropy_calibrator(config, profile["profile"], source, options, trt.__version__)
    serialized, calibration = build_serialized(builder, network, config, attach)
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (its log above says why)")
    save_timing_cache(config, options.timing_cache)
    io, layers = describe_io(serialized, logger, host_code=options.version_compatible, dla_core=options.dla_core)
    if plan.dla:
        print(placement_line(layers), flush=True)
    return {"serialized": serialized, "io": io, "profile": profile, "calibration": calibration, "layers": layers,
            "timing_cache": cache_status}


def build_serialized(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
                     attach_calibrator: Optional[Callable[[], Tuple[dict, Callable[[], None]]]] = None):
    """(plan, calibration record): the build, with a legacy calibrator attached first if asked; the
    calibrator's device buffer is freed on every path, a failed or interrupted build included."""
    calibration = None
    with ExitStack() as owned:
        if attach_calibrator is not None:
            calibration, free_calibrator = attach_calibrator()
            owned.callback(free_calibrator)
        serialized = builder.build_serialized_network(network, config)
    return serialized, calibration


def parse_onnx(network: "trt.INetworkDefinition", logger: "trt.ILogger", onnx_path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        for error in errors:
            print(f"  parser: {error}", file=sys.stderr)
        raise UserError(f"TensorRT could not parse {onnx_path} ({len(errors)} error(s) above, first: {errors[0] if errors else '?'})")


def describe_io(serialized: "trt.IHostMemory", logger: "trt.ILogger", host_code: bool = False,
                dla_core: Optional[int] = None) -> "tuple[List[dict], Dict[str, List[str]]]":
    """Names, dtypes and shapes of the engine's I/O and where its layers run, read back from the
    engine itself. `host_code`: this build made a version-compatible plan (with the lean runtime)."""
    import tensorrt as trt

    from runtime.backends.trt_io import dims_to_shape

    runtime = trt.Runtime(logger)
    if host_code:
        runtime.engine_host_code_allowed = True  # the plan was built here, by this call
    if dla_core is not None:
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise UserError("TensorRT could not read back the engine it just built (see its log)")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io.append({"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
                   "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
                   "shape": list(dims_to_shape(engine.get_tensor_shape(name)))})
    return io, inspect_layers(engine)
