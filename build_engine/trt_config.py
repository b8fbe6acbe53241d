"""The builder configuration: network flags, builder flags, DLA, version compatibility, the
optimization profile, the timing cache and the engine-inspector report of where layers run.

Every TensorRT name used here is in build_engine/trt_api.py, and each one that not every supported
version has is used only where `available(...)` says it exists. Tests run these functions against
stand-in modules holding only the names of TensorRT 8.5, 8.6, 10.3 and 11.4.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from build_engine.precision import BuildPlan, parse_version
from build_engine.trt_api import available
from runtime.errors import UserError
from runtime.files import atomic_write_bytes

if TYPE_CHECKING:  # mypy checks every TensorRT name below against the 10.13 stubs
    import tensorrt as trt


@dataclass
class BuildOptions:
    """Everything `python -m build_engine engine` asks for (its arguments, one to one)."""

    precision: str = "fp16"
    mode: str = "auto"
    output: str = "mask"  # "mask": the ONNX variant thresholded inside (uint8 out); "probabilities"
    calibrator: bool = False
    calibration_cache: Optional[Path] = None
    calibration_source: str = "synthetic"
    calibration_count: int = 300
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    min_size: Optional[int] = None  # only for ONNX with dynamic height/width
    opt_size: Optional[int] = None
    max_size: Optional[int] = None
    workspace_mib: int = 1024
    optimization_level: int = 3
    timing_cache: Optional[Path] = None
    dla_core: Optional[int] = None
    version_compatible: bool = False


def trt_version() -> Tuple[int, int]:
    import tensorrt as trt

    return parse_version(trt.__version__)


def make_progress_monitor() -> "trt.IProgressMonitor":
    """A TensorRT IProgressMonitor (10.x+) that prints the build phases that take over a second."""
    import tensorrt as trt

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._started: Dict[str, float] = {}

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

    version = trt_version()
    flags = 0
    if plan.explicit_batch_flag and available("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", version):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # 8.x: the ONNX parser needs it
    # 11.x: always strongly typed, the flag deprecated and ignored; 10.x: it must be asked for.
    if plan.strongly_typed and version[0] == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def configure(builder: "trt.Builder", config: "trt.IBuilderConfig", plan: BuildPlan, options: BuildOptions) -> None:
    import tensorrt as trt

    version = trt_version()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    for flag in plan.builder_flags:  # "FP16"/"INT8": plan_precision gives them on 8.x/10.x only
        if not available(f"BuilderFlag.{flag}", version):
            raise UserError(f"BuilderFlag.{flag} does not exist in TensorRT {version[0]}.{version[1]}")
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if available("IBuilderConfig.builder_optimization_level", version):
        config.builder_optimization_level = options.optimization_level
    if available("IProgressMonitor", version):
        config.progress_monitor = make_progress_monitor()
    # DETAILED keeps layer information in the plan so the engine inspector can say where each
    # layer runs (DLA or GPU) and with which precision; it costs a little plan size only.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.version_compatible:
        if not available("BuilderFlag.VERSION_COMPATIBLE", version):
            raise UserError("--version-compatible needs TensorRT 8.6 or newer")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if plan.dla:
        configure_dla(builder, config, options.dla_core)


def configure_dla(builder: "trt.Builder", config: "trt.IBuilderConfig", core: Optional[int]) -> None:
    import tensorrt as trt

    cores = builder.num_DLA_cores
    if core is None or core < 0 or core >= cores:
        raise UserError(f"DLA core {core} requested, this device has {cores} (Orin Nano has none; AGX Orin has 2)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # ConvTranspose and others may fall back to the GPU


def profile_shapes(dims: List[int], options: BuildOptions, dla: bool) -> Tuple[List[int], List[int], List[int], str]:
    """min/opt/max for one NCHW input; the DLA needs min = opt = max, so there every dimension is
    fixed to OPT (and the returned note says so)."""
    if not options.min_batch <= options.opt_batch <= options.max_batch:
        raise UserError(f"need min-batch <= opt-batch <= max-batch, got {options.min_batch}/{options.opt_batch}/{options.max_batch}")
    lo, opt, hi = list(dims), list(dims), list(dims)
    if dims[0] == -1:
        lo[0], opt[0], hi[0] = options.min_batch, options.opt_batch, options.max_batch
    for axis in (2, 3):
        if dims[axis] == -1:
            if options.min_size is None or options.max_size is None:
                raise UserError("the ONNX has dynamic height/width: give --min-size and --max-size (multiples of 16)")
            if not 0 < options.min_size <= options.max_size:
                raise UserError(f"need 0 < --min-size <= --max-size, got {options.min_size}/{options.max_size}")
            opt_size = options.opt_size if options.opt_size is not None else options.max_size
            if not options.min_size <= opt_size <= options.max_size:
                raise UserError(f"--opt-size {opt_size} lies outside --min-size/--max-size")
            lo[axis], opt[axis], hi[axis] = options.min_size, opt_size, options.max_size
    note = ""
    if dla and (lo != opt or hi != opt):
        note = (f"DLA needs a static profile: input fixed to {opt} (min = opt = max; was {lo} .. {hi}); "
                "the runner then takes exactly that batch and size")
        lo, hi = list(opt), list(opt)
    return lo, opt, hi, note


def add_profile(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
                options: BuildOptions, dla: bool = False) -> Dict[str, Any]:
    """One optimization profile for the dynamic batch (and height/width if dynamic)."""
    import tensorrt as trt

    from runtime.backends.trt_io import as_dims, dims_to_shape

    profile = builder.create_optimization_profile()
    shapes, notes = {}, []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        lo, opt, hi, note = profile_shapes(list(dims_to_shape(tensor.shape)), options, dla)
        profile.set_shape(tensor.name, as_dims(trt, lo), as_dims(trt, opt), as_dims(trt, hi))
        shapes[tensor.name] = {"min": lo, "opt": opt, "max": hi}
        if note:
            print(note, flush=True)
            notes.append(note)
    config.add_optimization_profile(profile)
    return {"profile": profile, "shapes": shapes, "notes": notes}


def load_timing_cache(config: "trt.IBuilderConfig", path: Optional[Path]) -> str:
    """Attach the timing cache at `path`: "new" (none yet), "reused", or "mismatch" (from another GPU or
    TensorRT version, or unreadable: set_timing_cache returned False) -> a fresh cache is attached,
    one line says so, and save_timing_cache replaces the file after the build."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return "reused"
        print(f"timing cache {path} does not match this GPU/TensorRT: building with a fresh cache, which will replace it",
              flush=True)
    fresh = config.create_timing_cache(b"")
    if not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise UserError("TensorRT refused a new, empty timing cache (see its log)")
    return "mismatch" if blob else "new"


def save_timing_cache(config: "trt.IBuilderConfig", path: Optional[Path]) -> None:
    if path is None:
        return
    try:
        atomic_write_bytes(path, bytes(memoryview(config.get_timing_cache().serialize())))
    except OSError as exc:  # a cache that cannot be saved costs the next build time, not this one
        print(f"warning: timing cache not saved to {path} ({exc.strerror}); the next build will re-time every layer",
              file=sys.stderr)


def layer_placement(engine_json: str) -> Dict[str, List[str]]:
    """From the inspector's JSON (ProfilingVerbosity.DETAILED): layer names by device.

    DLA subgraphs appear as layers whose LayerType mentions DLA (a `{ForeignNode[first...last]}`
    running a whole fused block), with reformat layers named `... to nvm` / `... from nvm` /
    `... copy finish` moving data in and out of the DLA's memory; everything else runs on the GPU.
    That classification follows trtexec/TREx dumps seen in NVIDIA's issue tracker (UNCONFIRMED in
    NVIDIA's documentation); a plan without layer details gives empty lists.
    """
    try:
        layers = json.loads(engine_json).get("Layers", [])
    except (ValueError, AttributeError):
        return {"dla": [], "gpu": [], "dla_io": []}
    placement: Dict[str, List[str]] = {"dla": [], "gpu": [], "dla_io": []}
    for layer in layers:
        if not isinstance(layer, dict):  # LAYER_NAMES_ONLY plans list bare names
            continue
        name, kind = str(layer.get("Name", "?")), str(layer.get("LayerType", ""))
        if "dla" in kind.lower():
            placement["dla"].append(name)
        elif name.endswith((" to nvm", " from nvm", " copy finish")):
            placement["dla_io"].append(name)
        else:
            placement["gpu"].append(name)
    return placement


def inspect_layers(engine: "trt.ICudaEngine") -> Dict[str, List[str]]:
    import tensorrt as trt

    inspector = engine.create_engine_inspector()
    return layer_placement(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def placement_line(placement: Dict[str, List[str]]) -> str:
    def names(items: List[str]) -> str:
        return ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")

    return (f"layers on the DLA: {len(placement['dla'])} [{names(placement['dla'])}]; "
            f"on the GPU (fallback): {len(placement['gpu'])} [{names(placement['gpu'])}]")
