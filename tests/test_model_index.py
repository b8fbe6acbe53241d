"""The model index: ONNX metadata read without the onnx package, variants found by recorded link."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime import metadata, naming
from runtime.errors import UserError
from runtime.files import sha256_file


def tiny_model(path, meta: dict, width: int = 4):
    """A one-node ONNX (Identity) with the given metadata_props, written by the onnx package itself."""
    node = helper.make_node("Identity", ["image"], ["mask"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, width])],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 4, width])],
                              initializer=[helper.make_tensor("w", TensorProto.FLOAT, [64], np.arange(64.0))])
    model = helper.make_model(graph, doc_string="x" * 300)  # a long field before metadata_props
    metadata.write_metadata(model, meta)
    onnx.save(model, path)
    return path


def test_metadata_read_from_the_wire_matches_the_onnx_package(tmp_path):
    meta = {metadata.PRECISION: "fp16", "unet.note": "ünïcode, = and ; inside", "empty": ""}
    path = tiny_model(tmp_path / "a b.onnx", meta)
    assert metadata.read_onnx_metadata(path) == meta == metadata.read_metadata(onnx.load(path))


def test_a_file_that_is_not_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 32)
    with pytest.raises(UserError, match="cannot read"):
        metadata.read_onnx_metadata(bad)


def test_variants_are_found_by_their_link_not_their_name(tmp_path):
    fp32 = tiny_model(tmp_path / "mine.onnx", {metadata.PRECISION: "fp32"})
    link = metadata.derived_from(fp32.name, sha256_file(fp32))
    other_fp32 = tiny_model(tmp_path / "other.onnx", {metadata.PRECISION: "fp32"}, width=8)
    tiny_model(tmp_path / "whatever.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt", **link})
    tiny_model(tmp_path / "mine_fp16.onnx", {metadata.PRECISION: "fp16", metadata.BACKEND: "any", **link})
    # A variant of another model, and one for another backend, must not be picked.
    tiny_model(tmp_path / "mine_int8.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt",
                                            **metadata.derived_from(other_fp32.name, sha256_file(other_fp32))})
    tiny_model(tmp_path / "cpu.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "onnxruntime", **link})

    assert naming.find_variant(fp32, "int8", ("tensorrt", "any")) == tmp_path / "whatever.onnx"
    assert naming.find_variant(fp32, "int8", ("onnxruntime",)) == tmp_path / "cpu.onnx"
    assert naming.find_variant(fp32, "fp16", ("tensorrt", "any")) == tmp_path / "mine_fp16.onnx"
    assert naming.find_variant(other_fp32, "fp16", ("any",)) is None
    assert naming.find_variant(fp32, "fp32") == fp32


def test_index_reads_engines_from_their_manifests_and_skips_junk(tmp_path):
    fp32 = tiny_model(tmp_path / "unet_fp32.onnx", {metadata.PRECISION: "fp32"})
    (tmp_path / "mine_int8.engine").write_bytes(b"plan")
    (tmp_path / "mine_int8.json").write_text(json.dumps({"schema": 1, "precision": "int8", "tensorrt": {"version": "10.3.0"},
                                                           "onnx": {"sha256": "abc", "source_sha256": sha256_file(fp32)}}))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.onnx").write_bytes(b"\xff" * 8)
    entries = {e.path.name: e for e in naming.index_models(tmp_path)}
    assert set(entries) == {"unet_fp32.onnx", "mine_int8.engine"}
    assert entries["mine_int8.engine"].backend == "tensorrt" and entries["mine_int8.engine"].precision == "int8"
    assert entries["unet_fp32.onnx"].source_sha256 == sha256_file(fp32)


@pytest.mark.parametrize("name, precision, expected", [
    ("unet_fp32.onnx", "fp16", "unet_fp16.onnx"), ("mine.onnx", "int8", "mine_int8.onnx"),
    ("my model.onnx", "fp16", "my model_fp16.onnx"),
])
def test_default_variant_and_engine_names_follow_the_stem(tmp_path, name, precision, expected):
    assert naming.variant_path(tmp_path / name, precision).name == expected
    assert naming.engine_path_for(tmp_path / name, precision).name == expected.replace(".onnx", ".engine")


@pytest.mark.parametrize("name, mask, weak", [
    ("unet_int8.onnx", "unet_int8_mask.onnx", "unet_int8_weak.onnx"),
    ("my model_int8.onnx", "my model_int8_mask.onnx", "my model_int8_weak.onnx"),
])
def test_mask_and_weak_variant_names_are_beside_their_model(tmp_path, name, mask, weak):
    assert naming.mask_variant_path(tmp_path / name) == tmp_path / mask
    assert naming.weak_variant_path(tmp_path / name) == tmp_path / weak


def test_linked_variants_lists_every_match_and_only_matches(tmp_path):
    """What the builder filters by TensorRT typing: every INT8 file linked to this FP32 model, whatever
    its name, and none of another model's, another precision's or another output kind's."""
    fp32 = tiny_model(tmp_path / "my model.onnx", {metadata.PRECISION: "fp32"})
    link = metadata.derived_from(fp32.name, sha256_file(fp32))
    other = tiny_model(tmp_path / "other.onnx", {metadata.PRECISION: "fp32"}, width=8)
    for name, typing in (("strong.onnx", "strong"), ("weak one.onnx", "weak")):
        tiny_model(tmp_path / name, {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt",
                                     metadata.TENSORRT_TYPING: typing, **link})
    tiny_model(tmp_path / "mask.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt",
                                        metadata.OUTPUT_KIND: metadata.OUTPUT_MASK, **link})
    tiny_model(tmp_path / "half.onnx", {metadata.PRECISION: "fp16", metadata.BACKEND: "any", **link})
    tiny_model(tmp_path / "foreign.onnx", {metadata.PRECISION: "int8", metadata.BACKEND: "tensorrt",
                                           **metadata.derived_from(other.name, sha256_file(other))})

    found = naming.linked_variants(fp32, "int8", ("tensorrt", "any"))
    assert sorted(p.name for p in found) == ["strong.onnx", "weak one.onnx"]
    assert naming.linked_variants(fp32, "int8", ("tensorrt",), output_kind=metadata.OUTPUT_MASK) == [tmp_path / "mask.onnx"]
    assert naming.linked_variants(fp32, "int8", ("onnxruntime",)) == []
