"""The TensorRT runner's logic on any CPU, through recording stand-ins of pycuda, TensorRT and
cuda-python (tests/trt_standins.py) that expose only the declared names: buffer sets and their
order, preprocessing straight into pinned memory, zero-copy on integrated GPUs, CUDA graph
capture decisions, dynamic output shapes, host-code and DLA settings, and teardown order with
every push popped. None of this shows the real API behaves so: `make gpu-test` does."""
import json

import numpy as np
import pytest

import runtime.backends.cuda_graph as cuda_graph
import runtime.backends.trt as trt_backend
from runtime.backends.cuda_graph import DriverGraphs, GraphSlot
from runtime.backends.trt_slots import SlotRing
from runtime.errors import UserError
from runtime.manifest import write_manifest
from trt_standins import FakeCuda, FakeDriver, FakeEngineSpec, fake_tensorrt, install_pycuda


@pytest.fixture
def cuda(monkeypatch):
    fake = FakeCuda()
    install_pycuda(monkeypatch, fake)
    return fake


def make_engine(tmp_path, manifest_extra=None, payload=b"plan"):
    engine = tmp_path / "my model_fp16.engine"  # a space in the name, as users do
    engine.write_bytes(payload)
    manifest = {"tensorrt": {"version": "10.3.0", "version_compatible": False},
                "gpu": {"name": "Stand-in GPU", "compute_capability": "8.7"}, "precision": "fp16",
                "onnx": {"path": str(tmp_path / "gone.onnx"), "sha256": ""}, "flags": {"dla_core": None}}
    manifest.update(manifest_extra or {})
    write_manifest(engine, manifest)
    return engine


def open_runner(monkeypatch, tmp_path, spec=None, driver=None, manifest_extra=None, payload=b"plan", **options):
    log = []
    module = fake_tensorrt(spec or FakeEngineSpec(), log)
    monkeypatch.setattr(trt_backend, "import_trt_runtime", lambda: (module, False))
    monkeypatch.setattr(cuda_graph, "import_cuda_driver", lambda: driver)
    runner = trt_backend.TensorRTRunner(make_engine(tmp_path, manifest_extra, payload), **options)
    return runner, log


def frames(count, size=(48, 80)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size, dtype=np.uint8) for _ in range(count)]


def test_two_buffer_sets_each_with_its_own_context_stream_and_buffers(cuda, monkeypatch, tmp_path):
    runner, log = open_runner(monkeypatch, tmp_path)
    with runner:
        # one probe context for the output size + one per buffer set
        assert [e for e, _ in log].count("create_execution_context") == 3
        first, second = runner._slots
        assert first.stream.handle != second.stream.handle and first.context is not second.context
        assert first.input.pointer != second.input.pointer
        assert first.input.host.shape == (4, 1, 64, 64)  # the profile's max batch
        assert runner.mode == {"buffer_sets": 2, "mapped_memory": False, "output": "probabilities",
                               "graphs": "enqueue"}


def test_submit_overlaps_and_collect_returns_in_order(cuda, monkeypatch, tmp_path):
    runner, _ = open_runner(monkeypatch, tmp_path)
    with runner:
        a, b, c = frames(3)
        assert runner.submit([a]) == 0 and runner.submit([b]) == 1 and runner.in_flight == 2
        with pytest.raises(RuntimeError, match="collect"):
            runner.submit([c])  # a third batch must wait for a free buffer set
        assert runner.in_flight == 2
        htod = cuda.events("htod_async")
        assert len(htod) == 2 and htod[0][1] is not htod[1][1]  # uploads from the two slots' own arrays
        first = runner.collect()
        assert runner.submit([c]) == 0  # slot 0 is free again
        second, third = runner.collect(), runner.collect()
        assert first.shape == second.shape == third.shape == (1, 1, 64, 64) and first.dtype == np.float32
        with pytest.raises(RuntimeError, match="nothing in flight"):
            runner.collect()
        assert set(runner.last_timings_ms) == {"h2d", "compute", "d2h"}


def test_frames_are_preprocessed_straight_into_the_pinned_buffer(cuda, monkeypatch, tmp_path):
    from runtime.preprocess import preprocess_batch, preprocess_into

    seen = []
    monkeypatch.setattr(trt_backend, "preprocess_into", lambda f, spec, out: (seen.append(out), preprocess_into(f, spec, out)))
    runner, _ = open_runner(monkeypatch, tmp_path)
    with runner:
        batch = frames(2)
        runner.submit(batch)
        pinned = runner._slots[0].input.host
        assert len(seen) == 2 and all(np.shares_memory(out, pinned) for out in seen)
        expected = preprocess_batch(batch, runner.spec)
        np.testing.assert_array_equal(pinned[:2], expected)
        uploaded = cuda.events("htod_async")[0][1]
        assert np.shares_memory(uploaded, pinned) and uploaded.size == 2 * 64 * 64  # only the rows in use
        runner.collect()


def test_batches_beyond_the_profile_run_in_chunks_and_outside_it_are_refused(cuda, monkeypatch, tmp_path):
    runner, log = open_runner(monkeypatch, tmp_path)
    with runner:
        out = runner.infer(np.zeros((10, 1, 64, 64), np.float32))
        assert out.shape == (10, 1, 64, 64)
        assert [s for e, s in log if e == "set_input_shape"][-3:] == [(4, 1, 64, 64), (4, 1, 64, 64), (2, 1, 64, 64)]
        with pytest.raises(UserError, match="1 to 4 frames"):
            runner.submit(frames(5))
        assert runner.in_flight == 0  # a refused submit leaves no slot taken


def test_dynamic_size_engine_takes_its_spec_from_the_manifest_and_asks_the_output_shape(cuda, monkeypatch, tmp_path):
    spec = FakeEngineSpec(input_shape=(-1, 1, -1, -1), profile=((1, 1, 32, 32), (1, 1, 64, 64), (2, 1, 128, 128)),
                          output_of=lambda s: (s[0], 1, s[2] // 2, s[3] // 2))  # not (N,1,H,W): must be asked
    runner, log = open_runner(monkeypatch, tmp_path, spec, manifest_extra={"input_spec": {"height": 96, "width": 112,
                                                                                         "channels": 1}})
    with runner:
        assert (runner.spec.height, runner.spec.width) == (96, 112)
        assert runner._slots[0].output.host.shape == (2, 1, 64, 64)  # output at the profile's max input
        out = runner.infer_frames(frames(1))
        assert out.shape == (1, 1, 48, 56)
        assert ("set_input_shape", (1, 1, 96, 112)) in log


def test_dynamic_size_without_a_recorded_spec_uses_the_profile_opt(cuda, monkeypatch, tmp_path):
    spec = FakeEngineSpec(input_shape=(-1, 1, -1, -1), profile=((1, 1, 32, 32), (1, 1, 64, 96), (2, 1, 128, 128)))
    runner, _ = open_runner(monkeypatch, tmp_path, spec)
    with runner:
        assert (runner.spec.height, runner.spec.width) == (64, 96)


def test_uint8_mask_engines_return_the_mask_as_is(cuda, monkeypatch, tmp_path):
    runner, _ = open_runner(monkeypatch, tmp_path, FakeEngineSpec(output_dtype=np.uint8))
    with runner:
        assert runner.output_kind == "mask"
        runner._slots[0].output.host[...] = 1
        out = runner.infer_frames(frames(1))
        assert out.dtype == np.uint8 and out.shape == (1, 1, 64, 64) and out.max() == 1


def test_integrated_gpus_use_mapped_memory_without_copies(monkeypatch, tmp_path):
    cuda = FakeCuda(integrated=True)
    install_pycuda(monkeypatch, cuda)
    runner, _ = open_runner(monkeypatch, tmp_path)
    with runner:
        assert runner.mode["mapped_memory"] and runner._slots[0].input.device_memory is None
        runner.infer_frames(frames(1))
        assert not cuda.events("htod_async") and not cuda.events("dtoh_async")
    cuda_off = FakeCuda(integrated=True)
    install_pycuda(monkeypatch, cuda_off)
    runner, _ = open_runner(monkeypatch, tmp_path, mapped_memory=False)
    with runner:
        runner.infer_frames(frames(1))
        assert cuda_off.events("htod_async") and not runner.mode["mapped_memory"]


def test_version_compatible_engines_need_an_explicit_allow(cuda, monkeypatch, tmp_path):
    vc = {"tensorrt": {"version": "10.3.0", "version_compatible": True}}
    with pytest.raises(UserError, match="--allow-host-code"):
        open_runner(monkeypatch, tmp_path, manifest_extra=vc)
    runner, log = open_runner(monkeypatch, tmp_path, manifest_extra=vc, allow_host_code=True)
    runner.close()
    names = [e for e, _ in log]
    assert names.index("Runtime.engine_host_code_allowed") < names.index("deserialize")
    # a sidecar that says nothing never turns host code on
    runner, log = open_runner(monkeypatch, tmp_path)
    runner.close()
    assert "Runtime.engine_host_code_allowed" not in [e for e, _ in log]


def test_dla_core_is_set_on_the_runtime_before_deserializing(cuda, monkeypatch, tmp_path):
    runner, log = open_runner(monkeypatch, tmp_path, manifest_extra={"flags": {"dla_core": 1}}, driver=FakeDriver())
    assert runner.mode["graphs"] == "enqueue" and any("DLA engine" in n for n in runner.notes)
    runner.close()
    names = [e for e, _ in log]
    assert ("Runtime.DLA_core", 1) in log and names.index("Runtime.DLA_core") < names.index("deserialize")


def test_teardown_frees_everything_in_context_in_order_and_pops_every_push(cuda, monkeypatch, tmp_path):
    for cycle in range(50):
        runner, _ = open_runner(monkeypatch, tmp_path / str(cycle) if (tmp_path / str(cycle)).mkdir() is None else None)
        runner.infer_frames(frames(1))
        runner.close()
        runner.close()  # idempotent
        assert cuda.current_depth() == 0, f"stale context push after cycle {cycle}"
    assert cuda.live == {"pinned": 0, "device": 0, "stream": 0, "event": 0}
    assert len(cuda.events("push")) == len(cuda.events("pop"))
    assert len(cuda.events("retain")) == 1  # the primary context is retained once per process
    frees = [(e, d) for e, _, d in cuda.log[-12:] if e.startswith(("free", "stream freed"))]
    assert all(depth == 1 for _, depth in frees), "freed outside the pushed context"
    order = [e for e, _ in frees]
    assert order.index("stream freed") < order.index("free device") < order.index("free pinned")


def test_a_failed_open_frees_what_it_made_and_pops(cuda, monkeypatch, tmp_path):
    with pytest.raises(UserError, match="could not load"):
        open_runner(monkeypatch, tmp_path, payload=b"bad plan")
    spec = FakeEngineSpec(profile=((1, 1, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64)), output_of=lambda s: (s[0], 1, -1, 64))
    with pytest.raises(UserError, match="output shape"):
        open_runner(monkeypatch, tmp_path, spec)
    assert cuda.current_depth() == 0 and cuda.live == {"pinned": 0, "device": 0, "stream": 0, "event": 0}


def test_the_runner_works_from_another_thread(cuda, monkeypatch, tmp_path):
    import threading

    runner, _ = open_runner(monkeypatch, tmp_path)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("y", runner.infer_frames(frames(2))))
    thread.start()
    thread.join(10)
    runner.close()
    assert result["y"].shape == (2, 1, 64, 64) and cuda.current_depth() == 0


# --- CUDA graph decisions -------------------------------------------------------------------------

def graph_slot(driver, enabled=True):
    return GraphSlot(DriverGraphs(driver) if driver else None, 7, enabled, "off by request")


def test_graph_warms_up_then_captures_then_replays_and_recaptures_on_a_new_shape():
    driver = FakeDriver()
    slot, enqueued = graph_slot(driver), []
    run = lambda key: slot.run(key, lambda: enqueued.append(key) or True)  # noqa: E731
    assert run((1, 1, 64, 64)) and enqueued == [(1, 1, 64, 64)] and driver.log == []  # warm-up, no capture
    run((1, 1, 64, 64))
    assert driver.log == ["begin", "end", "instantiate", "launch"] and slot.captures == 1
    run((1, 1, 64, 64))
    assert driver.log[-1] == "launch" and slot.replays == 1 and len(enqueued) == 2
    run((2, 1, 64, 64))  # new shape: the old graph goes, a warm-up enqueue runs
    assert driver.log[-2:] == ["destroy exec", "destroy graph"] and enqueued[-1] == (2, 1, 64, 64)
    run((2, 1, 64, 64))
    assert slot.captures == 2 and slot.mode == "cuda-graph"
    slot.free()
    assert driver.live_execs == driver.live_graphs == 0


@pytest.mark.parametrize("failing", ["begin", "end", "instantiate"])
def test_a_failed_capture_falls_back_to_plain_enqueue_for_good(failing):
    driver = FakeDriver(fail=failing)
    slot, enqueued = graph_slot(driver), []
    for _ in range(4):
        assert slot.run((1,), lambda: enqueued.append(driver.capturing) or True)
    assert not slot.enabled and slot.mode == "enqueue" and "CUDA graph off" in slot.why_off
    assert enqueued.count(False) == 4  # every frame really ran once (a call inside a capture only records)
    if failing != "begin":
        assert "end" in driver.log  # a begun capture is always ended
    assert driver.live_execs == driver.live_graphs == 0


def test_execute_returning_false_during_capture_ends_it_and_falls_back():
    driver = FakeDriver()
    slot, results = graph_slot(driver), iter([True, False, True])
    slot.run((1,), lambda: next(results))
    assert slot.run((1,), lambda: next(results))  # the fallback enqueue's result
    assert driver.log == ["begin", "end", "destroy graph"] and "returned False" in slot.why_off


def test_instantiate_uses_with_flags_where_the_bindings_have_it():
    for driver in (FakeDriver(with_flags=True), FakeDriver()):
        slot = graph_slot(driver)
        slot.run((1,), lambda: True)
        slot.run((1,), lambda: True)
        assert slot.captures == 1


def test_no_cuda_python_or_disabled_means_plain_enqueue_with_the_reason(cuda, monkeypatch, tmp_path):
    runner, _ = open_runner(monkeypatch, tmp_path, driver=None)
    with runner:
        assert runner.mode["graphs"] == "enqueue" and any("cuda-python is not installed" in n for n in runner.notes)
    runner, log = open_runner(monkeypatch, tmp_path, driver=FakeDriver())
    with runner:
        for _ in range(3):
            runner.infer_frames(frames(1))
        assert runner.mode["graphs"] == "cuda-graph" and not runner.notes
        assert runner._slots[0].graph.replays == 1
        assert runner.compute_only_ms(5) == pytest.approx(0.25 / 5)
    runner, _ = open_runner(monkeypatch, tmp_path, driver=FakeDriver(), cuda_graphs=False, buffer_sets=1)
    with runner:
        assert runner.mode == {"buffer_sets": 1, "mapped_memory": False, "output": "probabilities", "graphs": "enqueue"}


def test_slot_ring_hands_out_in_turn_and_collects_in_submission_order():
    ring = SlotRing(2)
    a = ring.acquire()
    ring.submitted(a, "x")
    b = ring.acquire()
    ring.cancel(b)  # a failed submit returns its slot
    b = ring.acquire()
    ring.submitted(b, "y")
    assert ring.oldest() == (a, "x")
    ring.collected(a)
    assert ring.acquire() == a and ring.oldest() == (b, "y")
    with pytest.raises(ValueError):
        SlotRing(0)


def test_manifest_written_by_tests_is_plain_json(tmp_path):
    engine = make_engine(tmp_path)
    assert json.loads(engine.with_suffix(".json").read_text())["gpu"]["compute_capability"] == "8.7"


def test_an_exception_inside_the_capture_ends_it_destroys_the_graph_and_turns_graphs_off():
    driver = FakeDriver()
    slot = graph_slot(driver)
    slot.run((1,), lambda: True)  # warm-up

    def raising():
        raise RuntimeError("binding error")

    with pytest.raises(RuntimeError, match="binding error"):
        slot.run((1,), raising)
    assert driver.log == ["begin", "end", "destroy graph"] and not driver.capturing
    assert driver.live_graphs == driver.live_execs == 0
    assert not slot.enabled and "raised during capture" in slot.why_off
    assert slot.run((1,), lambda: True) and driver.log[-1] == "destroy graph"  # plain enqueue from now on


def test_the_legacy_default_stream_is_never_captured():
    driver = FakeDriver()
    slot = GraphSlot(DriverGraphs(driver), 0, True)
    for _ in range(3):
        assert slot.run((1,), lambda: True)
    assert driver.log == [] and slot.mode == "enqueue" and "legacy default stream" in slot.why_off
