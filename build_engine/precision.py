"""How each TensorRT version gets FP16/INT8: one small, tested decision.

- 11.x: always strongly typed; precision comes from the ONNX (FP16 graph, or Q/DQ for INT8).
  The FP16/INT8 builder flags and calibrators no longer exist.
- 10.x: strongly typed from the FP16 / Q/DQ ONNX by default ("strong"); "weak" builds the FP32
  ONNX with the FP16 flag, and INT8 from the Q/DQ ONNX with INT8+FP16 flags or, with
  `calibrator`, from the FP32 ONNX with the legacy entropy calibrator.
- 8.5/8.6: weakly typed only, explicit batch requested; FP16 flag on the FP32 ONNX; INT8 from the
  Q/DQ ONNX with INT8 and FP16 flags (NVIDIA's 8.x guide: both, so un-quantized layers are not
  FP32), or the legacy calibrator.
Open points and the documented choice made (NVIDIA's "Explicit Quantization" and "Strongly Typed Networks" guides):
- 10.x strongly typed: no precision flags set, as NVIDIA's explicit-quantization guide says
  ("precision-control build flags are not required and should not be specified").
- 10.x weakly typed with Q/DQ: INT8 (+FP16) flags set; this rests on community evidence
  (NVIDIA/TensorRT#4021), so "strong" is the default on 10.x.
DLA (`dla=True`, Jetson AGX Orin / Orin NX / Xavier): the DLA runs FP16 or INT8 only and needs
the FP16/INT8 builder flags, which a strongly typed network rejects ("!config.getFlag(
BuilderFlag::kFP16)", NVIDIA/TensorRT#4253). So a DLA build is weakly typed on 8.x and 10.x
(`--typing auto` switches to weak and says so; an explicit `--typing strong` is refused), FP32 is
refused, and 11.x is refused (no DLA in 11.0-11.3; 11.4.1 has it on AGX Orin only, with strong
typing, which no source here confirms works with DLA). The profile is made static (see trt_config).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from runtime.errors import UserError
from runtime.naming import PRECISIONS

MODES = ("auto", "strong", "weak")


@dataclass(frozen=True)
class BuildPlan:
    onnx_variant: str  # which ONNX to parse: "fp32", "fp16" or "int8" (Q/DQ)
    strongly_typed: bool  # set NetworkDefinitionCreationFlag.STRONGLY_TYPED (10.x) / implicit (11.x)
    explicit_batch_flag: bool  # set NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.x only)
    builder_flags: tuple[str, ...]  # BuilderFlag member names
    legacy_calibrator: bool  # IInt8EntropyCalibrator2 over the calibration set
    how: str  # one line for the manifest and the log
    dla: bool = False  # default device DLA, GPU fallback on, static profile


def parse_version(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        raise UserError(f"cannot read the TensorRT version {version!r}") from None
    return major, minor


def plan_precision(trt_version: str, precision: str, mode: str = "auto", calibrator: bool = False,
                   dla: bool = False) -> BuildPlan:
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if mode not in MODES:
        raise UserError(f"typing mode must be one of {', '.join(MODES)}, not {mode!r}")
    if calibrator and precision != "int8":
        raise UserError("the legacy calibrator is for --precision int8 only")
    major, minor = parse_version(trt_version)
    if (major, minor) < (8, 5) or major == 9 or major > 11:
        raise UserError(f"TensorRT {trt_version} is not supported: use 8.5/8.6 (JetPack 5.1/6.0), 10.x or 11.x")

    if dla:
        return _plan_dla(major, trt_version, precision, mode, calibrator)
    if major == 11:
        if mode == "weak" or calibrator:
            raise UserError("TensorRT 11 builds strongly typed networks only: no weak typing, no calibrator; "
                            "use the FP16 or Q/DQ ONNX (`make onnx`)")
        return BuildPlan(precision, True, False, (), False,
                         f"TensorRT {major}.{minor}: strongly typed, types from unet_{precision}.onnx")

    weak = major == 8 or mode == "weak" or calibrator
    if not weak:  # 10.x strongly typed
        return BuildPlan(precision, True, False, (), False,
                         f"TensorRT {major}.{minor}: strongly typed (STRONGLY_TYPED flag), types from unet_{precision}.onnx")

    explicit_batch = major == 8
    if precision == "fp32":
        return BuildPlan("fp32", False, explicit_batch, (), False, f"TensorRT {major}.{minor}: weakly typed FP32")
    if precision == "fp16":
        return BuildPlan("fp32", False, explicit_batch, ("FP16",), False,
                         f"TensorRT {major}.{minor}: weakly typed, FP32 ONNX with the FP16 builder flag")
    if calibrator:
        return BuildPlan("fp32", False, explicit_batch, ("INT8", "FP16"), True,
                         f"TensorRT {major}.{minor}: weakly typed, FP32 ONNX, INT8+FP16 flags, legacy entropy calibrator")
    return BuildPlan("int8", False, explicit_batch, ("INT8", "FP16"), False,
                     f"TensorRT {major}.{minor}: weakly typed, Q/DQ ONNX with INT8+FP16 flags")


def _plan_dla(major: int, trt_version: str, precision: str, mode: str, calibrator: bool) -> BuildPlan:
    if major >= 11:
        raise UserError(f"--dla-core with TensorRT {trt_version}: 11.0-11.3 have no DLA and 11.4.1 only on AGX Orin with "
                        "strongly typed networks, unconfirmed here; build for the GPU, or on JetPack 6 (TensorRT 10.3)")
    if precision == "fp32":
        raise UserError("the DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla-core")
    if mode == "strong":
        raise UserError("DLA needs weak typing: it is selected through the FP16/INT8 builder flags, which a strongly "
                        "typed network rejects (NVIDIA/TensorRT#4253); drop --typing strong")
    plan = plan_precision(trt_version, precision, "weak", calibrator)
    why = "" if major == 8 else " (switched from strong typing: DLA needs the FP16/INT8 flags, NVIDIA/TensorRT#4253)"
    return replace(plan, dla=True, how=f"{plan.how}; DLA with GPU fallback{why}")
