"""Builder logic that needs no GPU, driven through stand-ins for TensorRT's objects.

`VersionedTensorRT` (tests/trt_builder_standins.py) holds only the names build_engine/trt_api.py lists for
one version, so running the configuration code against 8.5, 8.6, 10.3, 10.13 and 11.4 proves it
touches no name that version lacks (per the table; the table itself is checked against the stubs
and the real 11.4 bindings in test_tensorrt_static.py). The stand-ins record calls; they are not
evidence of how TensorRT behaves.
"""
import json
import sys

import pytest

from build_engine import builder, trt_config
from build_engine.precision import plan_precision
from build_engine.trt_api import CHECKED_VERSIONS
from calibration.trt_calibrator import cache_key, keyed_cache_path, read_keyed_cache, write_keyed_cache
from runtime import metadata, naming
from runtime.errors import UserError
from runtime.files import sha256_file
from runtime.manifest import check_manifest, check_onnx_unchanged, manifest_path, read_manifest, write_manifest
from trt_builder_standins import VersionedTensorRT
from trt_standins import FakeDims


@pytest.fixture
def use_trt(monkeypatch):
    def install(version, **answers):
        fake = VersionedTensorRT(version, {k.replace("__", "."): v for k, v in answers.items()})
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake
    return install


def plans_for(version):
    text = f"{version[0]}.{version[1]}.0"
    modes = ["auto"] if version[0] in (8, 11) else ["auto", "strong", "weak"]
    plans = [plan_precision(text, p, m) for p in ("fp32", "fp16", "int8") for m in modes]
    if version[0] < 11:
        plans.append(plan_precision(text, "int8", calibrator=True))
        plans += [plan_precision(text, p, dla=True) for p in ("fp16", "int8")]
    return plans


def configure_all(trt, plan, **options):
    b = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = b.create_network(trt_config.network_flags(plan))
    config = b.create_builder_config()
    opts = builder.BuildOptions(dla_core=0 if plan.dla else None, **options)
    trt_config.configure(b, config, plan, opts)
    trt_config.add_profile(b, network, config, opts, dla=plan.dla)
    return [entry[0] for entry in trt.log], trt.log


@pytest.mark.parametrize("version", CHECKED_VERSIONS)
def test_configuration_uses_only_the_names_each_version_has(use_trt, version):
    for plan in plans_for(version):
        trt = use_trt(version)
        keys, log = configure_all(trt, plan)
        flags = [entry[1][0].key for entry in log if entry[0] == "IBuilderConfig.set_flag"]
        assert ("IBuilderConfig.builder_optimization_level" in keys) == (version >= (8, 6))
        assert ("IBuilderConfig.progress_monitor" in keys) == (version >= (10, 0))
        assert ("IBuilderConfig.profiling_verbosity" in keys)  # DETAILED, for the inspector
        assert set(flags) == {f"BuilderFlag.{f}" for f in plan.builder_flags} | ({"BuilderFlag.GPU_FALLBACK"} if plan.dla else set())
        network_flags = [entry[1][0] for entry in log if entry[0] == "Builder.create_network"][0]
        assert (network_flags != 0) == (version[0] == 8 or (version[0] == 10 and plan.strongly_typed))


def test_a_strongly_typed_plan_never_gets_precision_flags_and_dla_is_never_strongly_typed():
    for version in CHECKED_VERSIONS:
        for plan in plans_for(version):
            assert not (plan.strongly_typed and plan.builder_flags), plan
            assert not (plan.dla and plan.strongly_typed), plan


def test_version_compatible_needs_8_6(use_trt):
    plan = plan_precision("8.5.2", "fp16")
    with pytest.raises(UserError, match="8.6 or newer"):
        configure_all(use_trt((8, 5)), plan, version_compatible=True)
    keys, log = configure_all(use_trt((8, 6)), plan_precision("8.6.2", "fp16"), version_compatible=True)
    assert any(e[0] == "IBuilderConfig.set_flag" and e[1][0].key == "BuilderFlag.VERSION_COMPATIBLE" for e in log)


def test_dla_plan_per_version():
    auto = plan_precision("10.3.0", "fp16", dla=True)
    assert auto.dla and not auto.strongly_typed and auto.builder_flags == ("FP16",) and "NVIDIA/TensorRT#4253" in auto.how
    assert plan_precision("8.5.2", "int8", dla=True).builder_flags == ("INT8", "FP16")
    with pytest.raises(UserError, match="weak typing"):
        plan_precision("10.3.0", "fp16", mode="strong", dla=True)
    with pytest.raises(UserError, match="FP16 or INT8 only"):
        plan_precision("10.3.0", "fp32", dla=True)
    with pytest.raises(UserError, match="11.0-11.3 have no DLA"):
        plan_precision("11.4.1", "fp16", dla=True)


def test_dla_configuration_and_a_missing_core(use_trt):
    trt = use_trt((10, 3))
    keys, log = configure_all(trt, plan_precision("10.3.0", "int8", dla=True))
    assert [e[1].key for e in log if e[0] == "IBuilderConfig.default_device_type"] == ["DeviceType.DLA"]
    assert ("IBuilderConfig.DLA_core", 0) in log
    trt = use_trt((10, 3), Builder__num_DLA_cores=lambda: 0)  # Orin Nano: no DLA
    with pytest.raises(UserError, match="has 0"):
        configure_all(trt, plan_precision("10.3.0", "fp16", dla=True))


def test_dla_makes_the_profile_static_and_says_so(capsys):
    options = builder.BuildOptions(min_batch=1, opt_batch=2, max_batch=8, min_size=64, max_size=256)
    lo, opt, hi, note = trt_config.profile_shapes([-1, 1, -1, -1], options, dla=True)
    assert lo == opt == hi == [2, 1, 256, 256] and "DLA needs a static profile" in note
    lo, opt, hi, note = trt_config.profile_shapes([-1, 1, 64, 64], builder.BuildOptions(opt_batch=1, max_batch=1), dla=True)
    assert note == "" and lo == hi == [1, 1, 64, 64]


def test_profile_covers_the_dynamic_batch_and_size(use_trt):
    trt = use_trt((10, 3), ITensor__shape=lambda: FakeDims((-1, 1, -1, -1)))
    b = trt.Builder(None)
    config = b.create_builder_config()
    with pytest.raises(UserError, match="--min-size"):
        trt_config.add_profile(b, b.create_network(0), config, builder.BuildOptions())
    out = trt_config.add_profile(b, b.create_network(0), config,
                                 builder.BuildOptions(min_batch=1, opt_batch=4, max_batch=16, min_size=64, opt_size=128,
                                                      max_size=256))
    assert out["shapes"]["image"] == {"min": [1, 1, 64, 64], "opt": [4, 1, 128, 128], "max": [16, 1, 256, 256]}
    set_shape = [e for e in trt.log if e[0] == "IOptimizationProfile.set_shape"][0]
    assert all(isinstance(d, FakeDims) for d in set_shape[1][1:])  # trt.Dims, as the stubs require
    with pytest.raises(UserError, match="min-batch <= opt-batch <= max-batch"):
        trt_config.profile_shapes([-1, 1, 8, 8], builder.BuildOptions(min_batch=4, opt_batch=2, max_batch=8), False)


def test_timing_cache_new_reused_and_mismatched(use_trt, tmp_path, capsys):
    path = tmp_path / "timing cache" / "timing.cache"
    trt = use_trt((10, 3))
    config = trt.Builder(None).create_builder_config()
    assert trt_config.load_timing_cache(config, path) == "new"
    trt = use_trt((10, 3), ITimingCache__serialize=lambda: b"fresh-cache")
    config = trt.Builder(None).create_builder_config()
    trt_config.save_timing_cache(config, path)
    assert path.read_bytes() == b"fresh-cache"
    assert trt_config.load_timing_cache(config, path) == "reused"
    # another GPU/version: set_timing_cache answers False for the old blob, True for a fresh one
    answers = iter([False, True])
    trt = use_trt((10, 3), IBuilderConfig__set_timing_cache=lambda cache, ignore_mismatch: next(answers),
                  ITimingCache__serialize=lambda: b"rebuilt")
    config = trt.Builder(None).create_builder_config()
    assert trt_config.load_timing_cache(config, path) == "mismatch"
    blobs = [e[1][0] for e in trt.log if e[0] == "IBuilderConfig.create_timing_cache"]
    assert blobs == [b"fresh-cache", b""]
    assert all(e[2] == {"ignore_mismatch": False} for e in trt.log if e[0] == "IBuilderConfig.set_timing_cache")
    lines = [line for line in capsys.readouterr().out.splitlines() if "timing cache" in line]
    assert len(lines) == 1 and "fresh cache" in lines[0]
    trt_config.save_timing_cache(config, path)
    assert path.read_bytes() == b"rebuilt"  # the fresh cache replaces the stale one


def test_layer_placement_from_the_inspector_json():
    info = json.dumps({"Layers": [
        {"Name": "image to nvm", "LayerType": "Reformat"},
        {"Name": "{ForeignNode[conv2d...max_pooling2d_3]}", "LayerType": "DLA"},
        {"Name": "mask from nvm", "LayerType": "Reformat"},
        {"Name": "conv2d_transpose", "LayerType": "CaskDeconvolutionV2"},
        {"Name": "{ForeignNode[concat...sigmoid]}", "LayerType": "Myelin"}], "Bindings": ["image", "mask"]})
    placement = trt_config.layer_placement(info)
    assert placement["dla"] == ["{ForeignNode[conv2d...max_pooling2d_3]}"]
    assert placement["gpu"] == ["conv2d_transpose", "{ForeignNode[concat...sigmoid]}"]
    assert placement["dla_io"] == ["image to nvm", "mask from nvm"]
    assert "on the DLA: 1" in trt_config.placement_line(placement)
    assert trt_config.layer_placement('{"Layers": ["a", "b"]}') == {"dla": [], "gpu": [], "dla_io": []}
    assert trt_config.layer_placement("not json") == {"dla": [], "gpu": [], "dla_io": []}


def test_describe_io_allows_host_code_only_for_a_version_compatible_build(use_trt):
    for host_code in (False, True):
        trt = use_trt((10, 3), EngineInspector__get_engine_information=lambda fmt: '{"Layers": []}',
                      ICudaEngine__get_tensor_name=lambda i: ["image", "mask"][i],
                      ICudaEngine__get_tensor_shape=lambda name: FakeDims((-1, 1, 64, 64)),
                      ICudaEngine__get_tensor_mode=lambda name: "INPUT" if name == "image" else "OUTPUT",
                      ICudaEngine__get_tensor_dtype=lambda name: "DataType.FLOAT")
        io, layers = builder.describe_io(b"plan", None, host_code=host_code, dla_core=1 if host_code else None)
        keys = [e[0] for e in trt.log]
        assert ("Runtime.engine_host_code_allowed" in keys) == host_code
        if host_code:
            assert keys.index("Runtime.engine_host_code_allowed") < keys.index("Runtime.deserialize_cuda_engine")
            assert ("Runtime.DLA_core", 1) in trt.log
        assert [d["shape"] for d in io] == [[-1, 1, 64, 64]] * 2 and layers["dla"] == []


def test_calibration_cache_is_keyed_by_model_set_and_version(tmp_path, capsys):
    base = tmp_path / "unet_int8.calib.cache"
    key = cache_key("onnx-a", "set-1", "10.3.0")
    path = keyed_cache_path(base, key)
    assert path.parent == tmp_path and path.name.startswith("unet_int8.calib-") and path.suffix == ".cache"
    others = {keyed_cache_path(base, cache_key(*parts)) for parts in
              [("onnx-b", "set-1", "10.3.0"), ("onnx-a", "set-2", "10.3.0"), ("onnx-a", "set-1", "8.6.2")]}
    assert path not in others and len(others) == 3
    assert read_keyed_cache(path, key) is None
    write_keyed_cache(path, key, b"TRT-100300-EntropyCalibration2\nimage: 3c010204\n")
    assert read_keyed_cache(path, key).startswith(b"TRT-100300")
    # a cache copied or renamed onto another key's name is still refused: the record must match
    stolen = keyed_cache_path(base, cache_key("onnx-b", "set-1", "10.3.0"))
    stolen.write_bytes(path.read_bytes())
    assert read_keyed_cache(stolen, cache_key("onnx-b", "set-1", "10.3.0")) is None
    assert "recalibrating" in capsys.readouterr().out


@pytest.fixture
def tiny_model():
    """Writes a one-node ONNX with the given metadata (needs the onnx package: imported only when used,
    so that this module still collects on a device with the runtime set only)."""
    from test_model_index import tiny_model as write

    return write


def test_the_plan_picks_the_variant_by_recorded_link_and_metadata(tmp_path, tiny_model):
    fp32 = tiny_model(tmp_path / "unet_fp32.onnx", {metadata.PRECISION: "fp32"})
    link = metadata.derived_from(fp32.name, sha256_file(fp32))
    mask = {metadata.OUTPUT_KIND: metadata.OUTPUT_MASK}
    tiny_model(tmp_path / "unet_fp16.onnx", {metadata.PRECISION: "fp16", **link})
    int8 = tiny_model(tmp_path / "unet_int8.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt", **link})
    fp32_mask = tiny_model(tmp_path / "unet_fp32_mask.onnx", {metadata.PRECISION: "fp32", **mask, **link})
    int8_mask = tiny_model(tmp_path / "unet_int8_mask.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt", **mask, **link})
    assert builder.onnx_variant_path(fp32, plan_precision("11.4.1", "int8")) == int8
    assert builder.onnx_variant_path(fp32, plan_precision("11.4.1", "int8"), "mask") == int8_mask
    assert builder.onnx_variant_path(fp32, plan_precision("8.6.2", "fp16")) == fp32  # weak: FP32 + FP16 flag
    # Any variant given stands for its FP32 source; weak FP16 builds the FP32 graph with the FP16 flag.
    assert builder.onnx_variant_path(int8_mask, plan_precision("8.6.2", "fp16"), "mask") == fp32_mask
    assert builder.onnx_variant_path(int8, plan_precision("10.3.0", "fp16")) == tmp_path / "unet_fp16.onnx"
    int8_mask.unlink()
    with pytest.raises(UserError, match="int8 mask variant of unet_fp32.onnx.*copy it from the workstation.*--output probabilities"):
        builder.onnx_variant_path(fp32, plan_precision("10.3.0", "int8"), "mask")
    int8.unlink()
    with pytest.raises(UserError, match="int8 variant of unet_fp32.onnx.*copy it from the workstation"):
        builder.onnx_variant_path(fp32, plan_precision("10.3.0", "int8"))


def test_a_users_model_is_never_built_from_a_file_that_only_looks_like_its_variant(tmp_path, tiny_model):
    mine = tiny_model(tmp_path / "mine.onnx", {})  # made by another tool: no metadata, taken as FP32
    # An FP32 model named like a variant, and a real FP16 variant of another model: neither is mine's.
    tiny_model(tmp_path / "mine_fp16.onnx", {metadata.PRECISION: "fp32"}, width=8)
    other = tiny_model(tmp_path / "other.onnx", {metadata.PRECISION: "fp32"}, width=16)
    tiny_model(tmp_path / "other_fp16.onnx", {metadata.PRECISION: "fp16", **metadata.derived_from(other.name, sha256_file(other))})
    with pytest.raises(UserError, match="fp16 variant of mine.onnx"):
        builder.onnx_variant_path(mine, plan_precision("10.3.0", "fp16"))
    linked = tiny_model(tmp_path / "anything.onnx", {metadata.PRECISION: "fp16", **metadata.derived_from(mine.name, sha256_file(mine))})
    assert builder.onnx_variant_path(mine, plan_precision("10.3.0", "fp16")) == linked
    assert naming.engine_path_for(builder.fp32_source(linked), "fp16").name == "mine_fp16.engine"


def test_a_variant_whose_source_is_missing_says_what_to_copy(tmp_path, tiny_model):
    variant = tiny_model(tmp_path / "unet_int8.onnx", {metadata.PRECISION: "int8", **metadata.derived_from("unet_fp32.onnx", "0" * 64)})
    with pytest.raises(UserError, match="variant of unet_fp32.onnx, which is not beside it"):
        builder.fp32_source(variant)
    with pytest.raises(UserError, match="does not exist; copy it from the workstation"):
        builder.fp32_source(tmp_path / "nope.onnx")


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


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0", "11.4.1"])
@pytest.mark.parametrize("output", ["probabilities", "mask"])
def test_the_builder_finds_every_shipped_variant_the_gpu_tests_build(version, output):
    from pathlib import Path

    data = Path(__file__).resolve().parent / "data"
    for precision in ("fp32", "fp16", "int8"):
        plan = plan_precision(version, precision)
        found = builder.onnx_variant_path(data / "unet_fp32.onnx", plan, output)
        meta = metadata.read_onnx_metadata(found)
        assert meta[metadata.PRECISION] == plan.onnx_variant
        assert metadata.output_kind_of(meta) == (metadata.OUTPUT_MASK if output == "mask" else metadata.OUTPUT_PROBABILITIES)
