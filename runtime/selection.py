"""Which model to run here, by measurement: for the backend at hand (TensorRT engines where
TensorRT, pycuda and a GPU work, else ONNX Runtime), the fastest model whose recorded accuracy
passes the gate.

Models are found by what they say they are (`naming.index_models`: ONNX metadata, engine
manifests), whatever their file names. A model's accuracy is the IoU vs its FP32 source that
was recorded for it: from `accuracy.json` (`make accuracy`, matched by the file's sha256), else
from its own metadata (measured on held-out calibration frames when it was quantized); an
engine inherits the figure of the ONNX it was built from. FP32 is the reference. A model with
no recorded accuracy is not chosen. Speed is measured here, at batch 1, interleaved.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from runtime import metadata
from runtime.errors import UserError
from runtime.files import sha256_file
from runtime.naming import ModelEntry, index_models

DEFAULT_MIN_IOU = 0.99


@dataclass
class Candidate:
    entry: ModelEntry
    iou: Optional[float]  # IoU vs FP32 as recorded; 1.0 for the FP32 reference
    accuracy_source: str
    made_for_here: bool
    latency_ms: Optional[float] = None
    problem: str = ""  # why it cannot be chosen, if it cannot

    @property
    def path(self) -> Path:
        return self.entry.path

    def passes(self, min_iou: float) -> bool:
        return self.made_for_here and not self.problem and self.iou is not None and self.iou >= min_iou

    def describe(self, min_iou: float) -> str:
        speed = f"{self.latency_ms:.2f} ms" if self.latency_ms is not None else "not timed"
        accuracy = "reference" if self.entry.precision == "fp32" and self.iou == 1.0 else (
            f"IoU vs FP32 {self.iou:.4f}" if self.iou is not None else "no recorded accuracy")
        verdict = self.problem or ("" if self.passes(min_iou) else f"below {min_iou}" if self.iou is not None
                                   else "run `make accuracy` to measure it")
        return (f"{self.path.name}: {self.entry.precision} for {self.entry.backend}, {speed}, {accuracy} "
                f"({self.accuracy_source}){'; skipped: ' + verdict if verdict else ''}")


@dataclass
class Choice:
    backend: str
    backend_reason: str
    min_iou: float
    candidates: List[Candidate]
    chosen: Candidate

    def lines(self) -> List[str]:
        head = (f"model: {self.chosen.path.name}, the fastest of {sum(c.passes(self.min_iou) for c in self.candidates)} "
                f"model(s) for {self.backend} ({self.backend_reason}) with IoU vs FP32 >= {self.min_iou}")
        return [head] + [f"  {'*' if c is self.chosen else ' '} {c.describe(self.min_iou)}" for c in self.candidates]


def backend_here() -> Tuple[str, str]:
    """("tensorrt", why) when TensorRT, pycuda and a CUDA device all work here, else ("onnxruntime", why not)."""
    try:
        from runtime.backends.cuda_mem import import_pycuda
        from runtime.backends.trt import import_trt_runtime

        import_trt_runtime()
        cuda = import_pycuda()
        cuda.init()
        if cuda.Device.count() < 1:
            return "onnxruntime", "no CUDA device"
        return "tensorrt", "TensorRT and a CUDA GPU are present"
    except UserError as exc:
        return "onnxruntime", f"no TensorRT GPU here: {str(exc).split(';')[0].split('(')[0].strip()}"
    except Exception as exc:  # pycuda raises its own types when the driver is missing
        return "onnxruntime", f"no working CUDA driver ({type(exc).__name__})"


def made_for(entry: ModelEntry, backend: str) -> bool:
    if backend == "tensorrt":
        return entry.is_engine
    return not entry.is_engine and entry.backend in ("any", "onnxruntime")


def load_report(path: Optional[Path]) -> Dict[str, dict]:
    """`accuracy.json`'s models by sha256 (and by file name for reports written before hashes were recorded)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        models = json.loads(Path(path).read_text()).get("models", [])
    except (OSError, ValueError, AttributeError):
        return {}
    index: Dict[str, dict] = {}
    for model in models if isinstance(models, list) else []:
        if isinstance(model, dict):
            key = model.get("sha256") or "name:" + Path(str(model.get("path", ""))).name
            index[key] = model
    return index


def recorded_accuracy(path: Path, report: Dict[str, dict]) -> Tuple[Optional[float], str]:
    """(IoU vs FP32, where it comes from) of an ONNX file."""
    digest = sha256_file(path)
    hit = report.get(digest) or report.get("name:" + path.name)
    if hit is not None and isinstance(hit.get("iou_vs_ref"), (int, float)):
        how = "accuracy.json" if digest in report else "accuracy.json, matched by name"
        return float(hit["iou_vs_ref"]), how
    meta = metadata.read_onnx_metadata(path)
    iou = metadata.recorded_iou(meta)
    if iou is not None:
        where = meta.get(metadata.IOU_MEASURED_ON, "when it was made")
        return iou, f"on {where}" + (", written below its gate" if meta.get(metadata.BELOW_GATE) == "true" else "")
    return None, "nothing recorded"


def _engine_accuracy(entry: ModelEntry, folder: Path, report: Dict[str, dict]) -> Tuple[Optional[float], str]:
    from runtime.manifest import read_manifest

    source = read_manifest(entry.path).get("onnx", {})
    onnx_path = Path(str(source.get("path", "")))
    if not onnx_path.is_file() or (source.get("sha256") and sha256_file(onnx_path) != source["sha256"]):
        matches = [e.path for e in index_models(folder) if not e.is_engine and sha256_file(e.path) == source.get("sha256")]
        if not matches:
            return None, "its ONNX is not here"
        onnx_path = matches[0]
    iou, how = recorded_accuracy(onnx_path, report)
    return iou, f"of {onnx_path.name}, {how}"


def list_candidates(folder: Path, backend: str, report_path: Optional[Path] = None) -> List[Candidate]:
    """Every model in `folder` with its recorded accuracy; those made for another backend are marked."""
    report = load_report(report_path)
    candidates = []
    for entry in index_models(folder):
        here = made_for(entry, backend)
        if entry.precision == "fp32" and not entry.is_engine:
            iou, how = 1.0, "the FP32 reference"
        elif entry.is_engine:
            iou, how = _engine_accuracy(entry, folder, report)
        else:
            iou, how = recorded_accuracy(entry.path, report)
        if entry.precision == "fp32" and entry.is_engine and iou is None:
            iou, how = 1.0, "FP32 engine"
        problem = "" if here else f"made for {entry.backend}, not {backend}"
        candidates.append(Candidate(entry, iou, how, here, problem=problem))
    return candidates


def measure_latency(candidates: List[Candidate], threads: Optional[int] = None, iterations: int = 12) -> None:
    """Batch-1 inference time of each candidate made for here, interleaved; a model that will not open is marked."""
    from runtime.data.synthetic import SaltVideo
    from runtime.factory import open_runner
    from runtime.preprocess import preprocess

    frame = SaltVideo(480, 640).frame(0)[0]
    opened = []
    try:
        for candidate in (c for c in candidates if c.made_for_here and not c.problem):
            try:
                runner = open_runner(candidate.path, threads=threads)
            except UserError as exc:
                candidate.problem = f"cannot open here ({str(exc).split(';')[0]})"
                continue
            opened.append((candidate, runner, preprocess(frame, runner.spec)))
        times: Dict[int, List[float]] = {i: [] for i in range(len(opened))}
        for iteration in range(iterations + 2):
            for index, (_, runner, tensor) in enumerate(opened):
                started = time.perf_counter()
                runner.infer(tensor)
                if iteration >= 2:  # the first runs warm up
                    times[index].append((time.perf_counter() - started) * 1e3)
        for index, (candidate, _, _) in enumerate(opened):
            candidate.latency_ms = float(np.median(times[index]))
    finally:
        for _, runner, _ in opened:
            runner.close()


def choose(candidates: List[Candidate], backend: str, backend_reason: str, min_iou: float = DEFAULT_MIN_IOU) -> Choice:
    """The fastest passing candidate (latencies already measured), or a UserError saying why none."""
    passing = [c for c in candidates if c.passes(min_iou) and c.latency_ms is not None]
    if not passing:
        if not candidates:
            raise UserError("no model found: run `make onnx` (or pass --model)")
        why = "; ".join(c.describe(min_iou) for c in candidates)
        raise UserError(f"no model for {backend} passes IoU vs FP32 >= {min_iou}: {why}")
    return Choice(backend, backend_reason, min_iou, candidates, min(passing, key=lambda c: c.latency_ms))


def choose_model(folder: Path, min_iou: float = DEFAULT_MIN_IOU, report_path: Optional[Path] = None,
                 threads: Optional[int] = None, backend: Optional[str] = None) -> Choice:
    """Everything above in one call: the backend at hand, the candidates, their speed, the choice."""
    backend, reason = (backend, "as asked") if backend else backend_here()
    candidates = list_candidates(folder, backend, report_path)
    measure_latency(candidates, threads)
    return choose(candidates, backend, reason, min_iou)
