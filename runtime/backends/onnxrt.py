"""ONNX Runtime backend: the CPU (or any ORT provider) behind the runner contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime import metadata
from runtime.backends.base import Runner, default_threads
from runtime.errors import UserError


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool = False):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX model {self.path} does not exist; create it with `make onnx`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle ORT threads spin-wait by default; on a small CPU they then steal the cores that
        # video decoding, drawing and other sessions need (measured here: 11 ms -> 32 ms per frame
        # with three sessions open; -20% FPS in the pipeline). Sleeping costs a little wake-up
        # latency (7-12% for a model timed alone), so offline benchmarks turn spinning on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind exception types
            first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX model {self.path} ({first_line}); re-create it with `make onnx`") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path} must have one input and one output, has {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        self.spec = metadata.spec_from_metadata(meta, inputs[0].shape, self.path)
        metadata.check_graph_matches(self.spec, inputs[0].shape, inputs[0].type, outputs[0].shape, outputs[0].type, self.path)
        self.precision = metadata.precision_of(meta) or "unknown"
        self.threshold = metadata.threshold_of(meta, self.path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        return self._session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self._session = None
