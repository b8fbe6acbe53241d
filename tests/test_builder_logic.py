"""Builder logic that needs no GPU, driven through a small stand-in for TensorRT's objects.

The stand-ins only record calls; that the TensorRT names exist is proven by mypy over the
stubs and by the lean-bindings test (test_tensorrt_static.py), never by these.
"""
import json

import pytest

from build_engine import builder
from build_engine.precision import plan_precision
from runtime.errors import UserError
from runtime.manifest import check_manifest, check_onnx_unchanged, manifest_path, read_manifest, write_manifest


class StandInTensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class StandInNetwork:
    def __init__(self, shape):
        self.num_inputs = 1
        self._input = StandInTensor("image", shape)

    def get_input(self, i):
        return self._input


class StandInProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (lo, opt, hi)


class StandInBuilder:
    def create_optimization_profile(self):
        return StandInProfile()


class StandInConfig:
    def __init__(self):
        self.profiles = []

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


def test_profile_covers_the_dynamic_batch():
    config = StandInConfig()
    out = builder.add_profile(StandInBuilder(), StandInNetwork([-1, 1, 128, 128]), config,
                              builder.BuildOptions(min_batch=1, opt_batch=4, max_batch=16))
    assert out["shapes"]["image"] == {"min": [1, 1, 128, 128], "opt": [4, 1, 128, 128], "max": [16, 1, 128, 128]}
    assert config.profiles == [out["profile"]]


def test_profile_for_dynamic_size_needs_sizes():
    with pytest.raises(UserError, match="--min-size"):
        builder.add_profile(StandInBuilder(), StandInNetwork([-1, 1, -1, -1]), StandInConfig(), builder.BuildOptions())
    out = builder.add_profile(StandInBuilder(), StandInNetwork([-1, 1, -1, -1]), StandInConfig(),
                              builder.BuildOptions(min_size=64, max_size=256))
    assert out["shapes"]["image"]["min"] == [1, 1, 64, 64] and out["shapes"]["image"]["max"] == [8, 1, 256, 256]


def test_profile_rejects_inconsistent_batches():
    with pytest.raises(UserError, match="min-batch <= opt-batch <= max-batch"):
        builder.add_profile(StandInBuilder(), StandInNetwork([-1, 1, 8, 8]), StandInConfig(),
                            builder.BuildOptions(min_batch=4, opt_batch=2, max_batch=8))


def test_the_plan_picks_the_onnx_variant_beside_the_one_given(tmp_path):
    for precision in ("fp32", "fp16", "int8"):
        (tmp_path / f"unet_{precision}.onnx").write_bytes(b"x")
    given = tmp_path / "unet_fp32.onnx"
    assert builder.onnx_variant_path(given, plan_precision("11.4.1", "int8")) == tmp_path / "unet_int8.onnx"
    assert builder.onnx_variant_path(given, plan_precision("8.6.2", "fp16")) == given  # weak: FP32 + FP16 flag
    (tmp_path / "unet_int8.onnx").unlink()
    with pytest.raises(UserError, match="make onnx"):
        builder.onnx_variant_path(given, plan_precision("10.3.0", "int8"))


def manifest(**overrides):
    base = {"tensorrt": {"version": "10.3.0", "version_compatible": False}, "gpu": {"name": "Orin", "compute_capability": "8.7"},
            "precision": "fp16", "onnx": {"path": "artifacts/unet_fp32.onnx", "sha256": ""}}
    base.update(overrides)
    return base


def test_manifest_refuses_other_tensorrt_and_other_gpus():
    check_manifest(manifest(), "10.3.0", "Orin", "8.7")
    with pytest.raises(UserError, match="built with TensorRT 10.3.0, this is 10.4.0; rebuild"):
        check_manifest(manifest(), "10.4.0", "Orin", "8.7")
    with pytest.raises(UserError, match="sm 8.7.*sm 9.0"):
        check_manifest(manifest(), "10.3.0", "H100", "9.0")
    check_manifest(manifest(tensorrt={"version": "10.3.0", "version_compatible": True}), "11.4.0", "Orin", "8.7")
    with pytest.raises(UserError, match="lean runtime loads only version-compatible"):
        check_manifest(manifest(), "10.3.0", "Orin", "8.7", lean_runtime=True)


def test_stale_engine_is_detected_from_the_onnx_hash(tmp_path):
    onnx = tmp_path / "unet_fp32.onnx"
    onnx.write_bytes(b"version 1")
    from runtime.files import sha256_file

    m = manifest(onnx={"path": str(onnx), "sha256": sha256_file(onnx)})
    check_onnx_unchanged(m)
    onnx.write_bytes(b"version 2")
    with pytest.raises(UserError, match="stale engine"):
        check_onnx_unchanged(m)


def test_manifest_round_trip_and_corruption(tmp_path):
    engine = tmp_path / "unet_fp16.engine"
    write_manifest(engine, manifest())
    assert read_manifest(engine)["gpu"]["name"] == "Orin"
    manifest_path(engine).write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        read_manifest(engine)
    manifest_path(engine).write_text(json.dumps({"schema": 99}))
    with pytest.raises(UserError, match="schema"):
        read_manifest(engine)
