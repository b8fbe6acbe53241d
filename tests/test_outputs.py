"""What the demo leaves behind: masks and overlays named after the inputs, labelled folders as sources,
several outputs at once, and the ground truth drawn on the overlay."""
from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, run_module
from runtime.app.overlay import TRUTH_COLOUR, draw_mask, draw_truth
from runtime.app.pipeline import Pipeline
from runtime.app.sinks import FrameSink, ImageFolderSink, TeeSink, VideoFileSink
from runtime.app.sources import ImageFolderSource, open_source, unique_names
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.images import read_image
from runtime.data.synthetic import SaltVideo
from runtime.errors import UserError
from runtime.postprocess import probabilities_to_mask
from runtime.preprocess import preprocess


def labelled_folder(root, names_and_sizes):
    """A user's labelled set: images/ (PNG and JPEG, gray and colour, odd sizes) and masks/ of the same stems."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (name, (height, width)) in enumerate(names_and_sizes):
        colour, mask = SaltVideo(height, width, seed=i).frame(i * 7)
        image = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY) if i % 2 else colour
        assert cv2.imwrite(str(root / "images" / name), image)
        assert cv2.imwrite(str(root / "masks" / (os.path.splitext(name)[0] + ".png")), mask * 255)
    return root


def user_model(path):
    """A segmentation ONNX this project did not make: a static 1x1x32x32 input, a 3x3 blur scaled into a
    Sigmoid, no metadata. Its output follows the image, so masks have something to get right."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 4 / 9, np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight"], ["logits"], pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["logits"], ["mask"])],
        "users_model", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 32, 32])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def expected_masks(model, folder, threshold):
    with OnnxRunner(model, threads=1) as runner:
        masks = {}
        for path in sorted((folder / "images").iterdir()):
            image = read_image(path)
            probabilities = runner.infer(preprocess(image, runner.spec))[0]
            masks[path.stem] = probabilities_to_mask(probabilities, *image.shape[:2], threshold)
        return masks


def median_probability(model, image_path):
    """A threshold that splits the model's output about in half."""
    with OnnxRunner(model, threads=1) as runner:
        image = read_image(image_path)
        return float(np.median(runner.infer(preprocess(image, runner.spec))[0]))


def test_save_masks_from_a_labelled_folder_keeps_the_input_names(tmp_path):
    model = user_model(tmp_path / "mine.onnx")
    data = labelled_folder(tmp_path / "my salt set", [("salt body 1.png", (101, 150)), ("second image.jpg", (96, 96)),
                                                      ("grey (3).png", (80, 120))])
    threshold = round(median_probability(model, data / "images" / "salt body 1.png"), 6)
    masks_dir, overlays = tmp_path / "out masks", tmp_path / "overlays"
    result = run_module("runtime", "demo", "--model", str(model), "--source", str(data), "--save-masks", str(masks_dir),
                        "--output", str(overlays), "--threshold", str(threshold), "--threads", "1",
                        "--summary-json", str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stderr
    names = {"salt body 1.png", "second image.png", "grey (3).png"}
    assert {p.name for p in masks_dir.iterdir()} == names and {p.name for p in overlays.iterdir()} == names
    expected = expected_masks(model, data, threshold)
    assert all(0.1 < m.mean() < 0.9 for m in expected.values())  # masks with something to get right
    for stem, mask in expected.items():
        written = cv2.imread(str(masks_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 255}
        np.testing.assert_array_equal(written > 0, mask.astype(bool))  # the runner's thresholded output, exactly
    assert "3 images with ground-truth masks from labelled folder" in result.stdout
    assert "IoU against ground truth" in result.stdout  # the folder's masks are the truth
    assert f"masks in {masks_dir}: 3 frames" in result.stdout and f"images in {overlays}: 3 frames" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iou"] is not None and len(summary["outputs"]) == 2


def test_video_sources_name_masks_by_frame_index_and_a_mask_video_is_lossless(tiny_model_dir, tmp_path):
    with OnnxRunner(tiny_model_dir / "unet_fp32.onnx", threads=1) as runner, ExitStack() as stack:
        source = stack.enter_context(open_source("synthetic://?frames=6&width=96&height=64"))
        folder = stack.enter_context(ImageFolderSink(tmp_path / "masks", masks=True))
        video = stack.enter_context(VideoFileSink(tmp_path / "masks.mkv", 10, masks=True))
        stats = Pipeline(source, runner, TeeSink([folder, video]), threshold=0.3).run()
    assert stats.frames_out == 6
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"frame_{i:06d}.png" for i in range(6)]
    capture = cv2.VideoCapture(str(tmp_path / "masks.mkv"))
    for i in range(6):
        ok, frame = capture.read()
        assert ok
        np.testing.assert_array_equal(frame[..., 0], cv2.imread(str(tmp_path / "masks" / f"frame_{i:06d}.png"), 0))
    assert not capture.read()[0]
    capture.release()


def test_repeated_stems_get_the_index_so_no_output_overwrites_another(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "y z.png"]
    assert unique_names(paths) == ["000000_x", "000001_x", "y z"]
    for path in paths:
        cv2.imwrite(str(path), np.zeros((8, 8), np.uint8))
    with open_source(str(tmp_path / "*" / "*.png")) as source:
        assert isinstance(source, ImageFolderSource)
        assert [source.read().output_name() for _ in range(3)] == ["000000_x", "y z", "000002_x"]  # sorted paths


def test_a_labelled_folder_with_an_unmatched_image_is_refused(tmp_path):
    data = labelled_folder(tmp_path / "set", [("a.png", (32, 32)), ("b.png", (32, 32))])
    (data / "masks" / "b.png").unlink()
    with pytest.raises(UserError, match="have no mask"):
        open_source(str(data))


class Recording(FrameSink):
    def __init__(self, stop_after=None):
        self.names, self.stop_after, self.description = [], stop_after, "recording"

    def write(self, out):
        self.names.append(out.frame.output_name())
        self.frames += 1
        return self.stop_after is None or self.frames < self.stop_after


def test_every_sink_gets_every_frame_and_any_can_stop_the_run(tiny_model_dir):
    first, second = Recording(), Recording(stop_after=3)
    tee = TeeSink([first, second])
    with OnnxRunner(tiny_model_dir / "unet_fp32.onnx", threads=1) as runner:
        with open_source("synthetic://?frames=50&width=64&height=64") as source:
            Pipeline(source, runner, tee).run()
    assert first.names == second.names and 3 <= len(first.names) < 50  # the window closed after 3 frames
    assert tee.description == "recording; recording" and tee.report().count("recording: ") == 2


def test_display_is_honoured_together_with_output(tiny_model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = tmp_path / "demo.mp4"
    result = run_module("runtime", "demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--source",
                        "synthetic://?frames=3&width=64&height=64", "--output", str(out), "--display", env=env)
    # not silently dropped in favour of --output; the way out does not ask for the --output already given
    assert_one_line_error(result, "--display: no display", "leave --display out", "--serve")
    assert not out.exists() and "running:" not in result.stdout  # refused before the model was opened


def test_the_overlay_outlines_the_ground_truth():
    image = np.full((60, 80), 100, np.uint8)
    predicted, truth = np.zeros((60, 80), np.uint8), np.zeros((60, 80), np.uint8)
    predicted[10:30, 10:30] = 1
    truth[20:50, 40:70] = 1
    overlay = draw_mask(image, predicted)
    draw_truth(overlay, truth)
    blue, g, red = (overlay[..., c].astype(int) for c in range(3))
    green = g - np.maximum(blue, red) > 60  # anti-aliased, so close to TRUTH_COLOUR rather than equal
    outline = truth - cv2.erode(truth, np.ones((3, 3), np.uint8))
    assert green[outline.astype(bool)].mean() > 0.9  # along the truth's border
    assert not green[25:45, 45:65].any() and not green[:15].any()  # nowhere else
    before = overlay.copy()
    draw_truth(overlay, np.zeros_like(truth))  # no salt in the truth: nothing drawn, no error
    np.testing.assert_array_equal(before, overlay)
    assert TRUTH_COLOUR[1] > 200 and max(TRUTH_COLOUR[0], TRUTH_COLOUR[2]) < 100


def test_paced_and_looping_sources():
    from runtime.app.sources import LoopingSource, PacedSource

    with open_source("synthetic://?frames=10&width=32&height=32&fps=50") as inner:
        paced = PacedSource(inner)
        started = time.perf_counter()
        frames = [paced.read() for _ in range(11)]
        assert time.perf_counter() - started >= 9 / 50 - 0.01  # at the video's own 50 fps, not faster
    assert frames[-1] is None and [f.index for f in frames[:-1]] == list(range(10)) and "played at 50 fps" in paced.description
    with LoopingSource("synthetic://?frames=3&width=32&height=32") as looping:
        assert [looping.read().index for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0] and looping.passes == 3
