"""Issue 10, "inputs checked before any work": paths with special characters, synthetic:// limits,
damaged ground-truth files, every CLI number, engine sidecars, ONNX metadata against the graph,
and training masks. Each bad input is one line and a non-zero exit, before the run starts."""
import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import runtime.__main__ as runtime_cli
from build_engine.__main__ import main as build_main
from build_engine.train import TrainConfig, load_training_data
from calibration.__main__ import main as calibration_main
from conftest import assert_one_line_error, assert_one_line_error_text, call_cli, decoded_frames, run_module
from runtime.app.sources import CaptureSource, ImageFolderSource, open_source
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import write_video
from runtime.errors import UserError, run_cli
from runtime.manifest import read_manifest

# --- an existing path is a file or a folder, whatever its name ------------------------------------

NAMES = ["clip !.mp4", "what?.mp4", "take [2].mp4", "a ! b ? [c] d.mp4"]


@pytest.mark.parametrize("name", NAMES)
def test_an_existing_video_is_read_whatever_its_name(tmp_path, name):
    path = tmp_path / name
    write_video(str(path), frames=4, height=32, width=48)
    with open_source(str(path)) as source:
        assert isinstance(source, CaptureSource) and not source.live
        assert [source.read() is not None for _ in range(5)] == [True] * 4 + [False]


def test_existing_folders_and_globs_are_literal_whatever_their_names(tmp_path):
    folder = tmp_path / "shots [a] ! b?"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((32, 32), 50 * i, np.uint8))
    for uri in (str(folder), str(folder / "*.png")):
        with open_source(uri) as source:
            assert isinstance(source, ImageFolderSource)
            assert [source.read() is not None for _ in range(4)] == [True, True, True, False]


def test_the_demo_runs_a_video_named_like_a_pipeline(tiny_model_dir, tmp_path, capsys):
    video, out = tmp_path / "cam ! x [1].mp4", tmp_path / "out ? [1].mp4"
    write_video(str(video), frames=5, height=48, width=64)
    code, stdout, err = call_cli(runtime_cli.main, ["demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"),
                                                    "--source", str(video), "--output", str(out)], capsys)
    assert code == 0, err
    assert "out 5," in stdout and decoded_frames(out) == 5


# --- synthetic:// limits and damaged ground truth -------------------------------------------------

@pytest.mark.parametrize("query, fragment", [
    ("fps=inf", "fps"), ("fps=nan", "fps"), ("fps=0", "fps"), ("fps=-5", "fps"), ("width=100000", "8192"),
    ("height=4", "between 16"), ("frames=0", "frames >= 1"), ("fsp=30", "unknown parameter 'fsp'"),
])
def test_synthetic_parameters_are_range_checked(tiny_model_dir, query, fragment, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code, _, err = call_cli(runtime_cli.main, ["demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--source",
                                               f"synthetic://?{query}", "--output", str(out)], capsys)
    assert_one_line_error_text(code, err, fragment)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong keys", "wrong shape"])
def test_a_damaged_masks_file_is_one_line(tiny_model_dir, tmp_path, damage, capsys):
    video = tmp_path / "clip.mp4"
    masks = tmp_path / "clip.mp4.masks.npz"
    write_video(str(video), frames=3, height=32, width=32)
    if damage == "garbage":
        masks.write_bytes(b"\x00not a zip" * 50)
    elif damage == "truncated":
        masks.write_bytes(masks.read_bytes()[:60])
    elif damage == "wrong keys":
        np.savez(masks, something=np.zeros(3))
    else:
        np.savez(masks, packed=np.zeros((3, 2), np.uint8), shape=np.array([3, 32, 32]))
    code, _, err = call_cli(runtime_cli.main, ["demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"),
                                               "--source", str(video)], capsys)
    assert_one_line_error_text(code, err, str(masks), "unreadable")


# --- every CLI number is range-checked by argparse ------------------------------------------------

CLIS = {"runtime": runtime_cli.main, "build_engine": lambda a: run_cli(build_main, a),
        "calibration": lambda a: run_cli(calibration_main, a)}


@pytest.mark.parametrize("cli, argv, fragment", [
    ("runtime", ["demo", "--max-frames", "-1"], "--max-frames"),
    ("runtime", ["demo", "--threshold", "nan"], "finite"),
    ("runtime", ["demo", "--read-timeout", "inf"], "--read-timeout"),
    ("runtime", ["demo", "--reconnects", "-2"], "--reconnects"),
    ("runtime", ["demo", "--threads", "0"], "--threads"),
    ("runtime", ["bench", "--iterations", "0"], "--iterations"),
    ("runtime", ["bench", "--soak", "-1"], "--soak"),
    ("build_engine", ["train", "--epochs", "0"], ">= 1, not 0"),
    ("build_engine", ["train", "--batch-size", "eight"], "expected an integer"),
    ("build_engine", ["train", "--lr", "-0.1"], "--lr"),
    ("build_engine", ["train", "--max-minutes", "0"], "--max-minutes"),
    ("build_engine", ["engine", "--max-batch", "0"], "--max-batch"),
    ("build_engine", ["export", "--opset", "11"], "--opset"),
    ("calibration", ["quantize", "--count", "-5"], "--count"),
    ("calibration", ["quantize", "--percentile", "100"], "--percentile"),
    ("calibration", ["evaluate", "--threshold", "1"], "--threshold"),
    ("calibration", ["evaluate", "--every", "0"], "--every"),
])
def test_cli_numbers_are_range_checked(cli, argv, fragment, capsys):
    code, out, err = call_cli(CLIS[cli], argv, capsys)
    assert_one_line_error_text(code, err, fragment)
    assert code == 2 and "usage:" not in err


def test_a_negative_count_is_one_line_from_the_real_command():
    assert_one_line_error(run_module("calibration", "quantize", "--count", "-5"), "argument --count", "not -5")


# --- engine sidecars ------------------------------------------------------------------------------

GOOD_SIDECAR = {"schema": 1, "tensorrt": {"version": "10.3.0", "version_compatible": False}, "precision": "fp16",
                "gpu": {"name": "Orin", "compute_capability": "8.7"}, "onnx": {"path": "a.onnx", "sha256": "00"}}


@pytest.mark.parametrize("sidecar, fragment", [
    ([GOOD_SIDECAR], "JSON list"),
    ("just text", "JSON str"),
    ({**GOOD_SIDECAR, "schema": 7}, "schema 7"),
    ({k: v for k, v in GOOD_SIDECAR.items() if k != "precision"}, "lacks 'precision'"),
    ({**GOOD_SIDECAR, "tensorrt": {"version": 10.3}}, "'tensorrt.version' is 10.3, not a string"),
    ({**GOOD_SIDECAR, "tensorrt": "10.3.0"}, "'tensorrt' is"),
    ({**GOOD_SIDECAR, "gpu": ["Orin"]}, "'gpu'"),
    ({**GOOD_SIDECAR, "tensorrt": {"version": "10.3.0", "version_compatible": "yes"}}, "version_compatible"),
])
def test_a_malformed_engine_sidecar_is_one_line(tmp_path, sidecar, fragment, capsys):
    engine = tmp_path / "unet_fp16.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "unet_fp16.json").write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match=r"unet_fp16\.json"):
        read_manifest(engine)
    code, _, err = call_cli(runtime_cli.main, ["demo", "--model", str(engine), "--source", "synthetic://?frames=2"], capsys)
    assert_one_line_error_text(code, err, fragment, "unet_fp16.json")


def test_a_well_formed_sidecar_passes_the_schema(tmp_path):
    engine = tmp_path / "unet_fp16.engine"
    (tmp_path / "unet_fp16.json").write_text(json.dumps(GOOD_SIDECAR))
    assert read_manifest(engine)["precision"] == "fp16"


# --- ONNX metadata against the graph, checked when the runner opens --------------------------------

def tiny_onnx(path, meta=None, input_shape=("N", 1, 32, 32), out_channels=1, input_type=TensorProto.FLOAT):
    """A 1x1 convolution and a sigmoid: the smallest model with the runtime's I/O contract."""
    in_channels = input_shape[1]
    kernel = [1] * (len(input_shape) - 2)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [out_channels, in_channels, *kernel], [0.5] * out_channels * in_channels)
    nodes = [helper.make_node("Conv", ["image", "w"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["mask"])]
    if input_type != TensorProto.FLOAT:
        nodes.insert(0, helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT))
        nodes[1].input[0] = "image_f"
    output_shape = [input_shape[0], out_channels, *input_shape[2:]]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", input_type, list(input_shape))],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, output_shape)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (meta or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, path)
    return path


META = {"unet.input_height": 32, "unet.input_width": 32, "unet.input_channels": 1}


def test_a_model_whose_metadata_matches_its_graph_opens_and_runs(tmp_path):
    with OnnxRunner(tiny_onnx(tmp_path / "ok.onnx", META)) as runner:
        assert runner.infer(np.zeros((2, 1, 32, 32), np.float32)).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("meta, kwargs, fragment", [
    ({**META, "unet.input_height": 64}, {}, "metadata says input height 64, the graph's input has 32"),
    ({**META, "unet.input_channels": 3}, {}, "metadata says 3 input channel(s), the graph's input has 1"),
    ({**META, "unet.input_width": "32.5"}, {}, "unet.input_width='32.5' is not an integer"),
    ({**META, "unet.input_height": "0"}, {}, "must be positive"),
    ({k: v for k, v in META.items() if k != "unet.input_width"}, {}, "unet.input_width is missing"),
    (META, {"out_channels": 3}, "output has 3 channels"),
    (META, {"input_shape": ("N", 32, 32, 1)}, "NCHW expected"),
    (META, {"input_shape": ("N", 1, 32)}, "not NCHW"),
    (META, {"input_type": TensorProto.FLOAT16}, "input is tensor(float16)"),
])
def test_metadata_that_contradicts_the_graph_is_one_line_when_the_model_opens(tmp_path, meta, kwargs, fragment, capsys):
    model = tiny_onnx(tmp_path / "theirs.onnx", meta, **kwargs)
    with pytest.raises(UserError, match="theirs.onnx") as caught:
        OnnxRunner(model)
    assert fragment in str(caught.value)
    code, out, err = call_cli(runtime_cli.main, ["demo", "--model", str(model), "--source", "synthetic://?frames=5"], capsys)
    assert_one_line_error_text(code, err, fragment)
    assert "frames in" not in out  # refused at open, not in the middle of a run


# --- training data sanity -------------------------------------------------------------------------

def make_training_folder(root, mask_for):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(root / "images" / f"s{i}.png"), rng.integers(0, 255, (40, 40), np.uint8))
        mask_for(i, root / "masks" / f"s{i}.png", rng)
    return root


def disc(value):
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 9, value, -1)
    return mask


@pytest.mark.parametrize("on", [1, 255])
def test_binary_masks_as_0_1_or_0_255_are_accepted(tmp_path, on):
    root = make_training_folder(tmp_path / "set", lambda i, p, rng: cv2.imwrite(str(p), disc(on)))
    _, y_train, _, y_val = load_training_data(TrainConfig(size=32, data=str(root)))
    assert set(np.unique(np.concatenate([y_train.ravel(), y_val.ravel()]))) == {0.0, 1.0}


def test_a_mask_of_noise_names_its_file(tmp_path, capsys):
    def masks(i, path, rng):
        cv2.imwrite(str(path), rng.integers(0, 256, (40, 40), np.uint8) if i == 5 else disc(255))

    root = make_training_folder(tmp_path / "set", masks)
    code, _, err = call_cli(lambda a: run_cli(build_main, a), ["train", "--data", str(root), "--size", "32",
                                                                 "--out", str(tmp_path / "m.keras")], capsys)
    assert_one_line_error_text(code, err, "s5.png", "not binary")
    assert not (tmp_path / "m.keras").exists()


def test_jpeg_masks_with_in_between_values_are_refused(tmp_path):
    root = make_training_folder(tmp_path / "set", lambda i, p, rng: cv2.imwrite(str(p.with_suffix(".jpg")), disc(255)))
    with pytest.raises(UserError, match="JPEG"):
        load_training_data(TrainConfig(size=32, data=str(root)))


def test_all_empty_masks_are_refused(tmp_path, capsys):
    root = make_training_folder(tmp_path / "set", lambda i, p, rng: cv2.imwrite(str(p), np.zeros((40, 40), np.uint8)))
    code, _, err = call_cli(lambda a: run_cli(build_main, a), ["train", "--data", str(root), "--size", "32",
                                                                 "--out", str(tmp_path / "m.keras")], capsys)
    assert_one_line_error_text(code, err, "all 12 masks", "empty")
