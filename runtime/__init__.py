"""The device core: everything a user embeds in their own application, with no TensorFlow.

    import cv2
    from runtime import open_runner, output_to_mask, preprocess

    with open_runner("artifacts/unet_int8.engine") as runner:   # or any .onnx (ONNX Runtime)
        capture = cv2.VideoCapture("video.mp4")
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            output = runner.infer(preprocess(frame, runner.spec))[0]   # probabilities, or a _mask model's uint8 mask
            mask = output_to_mask(output, *frame.shape[:2], runner.threshold)   # uint8 {0,1}, frame size
        capture.release()

`runtime.app` holds the streaming application (sources, sinks, pipeline, demo, bench) built on it.
"""
from runtime.backends.base import Runner
from runtime.errors import UserError
from runtime.factory import open_runner
from runtime.postprocess import output_to_mask, probabilities_to_mask
from runtime.preprocess import InputSpec, preprocess, preprocess_batch

__all__ = ["InputSpec", "Runner", "UserError", "open_runner", "output_to_mask", "preprocess", "preprocess_batch",
           "probabilities_to_mask"]
