"""On real hardware (`make gpu-test`), pycuda only (marker `cuda`: pycuda + a CUDA GPU, no TensorRT):
buffers, streams, events, mapped memory, CUDA graphs, worker threads. Elsewhere they skip with the
missing piece named; under `make gpu-test` (REQUIRE_GPU=1) they fail instead. None of these has run
on a GPU yet.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import unmarked_device_tests


@pytest.mark.cuda
def test_pinned_and_device_buffers_round_trip_and_free(cuda_available):
    from runtime.backends import cuda_mem

    context = cuda_mem.CudaContext()
    with context:
        free_before = context.memory_info()[0]
        for _ in range(50):
            buffer = cuda_mem.HostDeviceBuffer((4, 1, 64, 64), np.float32)
            stream, timer = cuda_mem.new_stream(), cuda_mem.StageTimer()
            data = np.random.default_rng(0).random((4, 1, 64, 64), dtype=np.float32)
            buffer.host[...] = data
            timer.mark(0, stream)
            cuda_mem.copy_to_device(buffer, stream, data.size)
            timer.mark(1, stream)
            buffer.host[...] = 0
            timer.mark(2, stream)
            cuda_mem.copy_to_host(buffer, stream, data.size)
            timer.mark(3, stream)
            times = timer.elapsed_ms()
            np.testing.assert_array_equal(buffer.host, data)
            buffer.free()
            timer.free()
            del stream
        free_after = context.memory_info()[0]
    print(f"  last H2D {times['h2d']:.3f} ms, D2H {times['d2h']:.3f} ms for {data.nbytes} bytes")
    assert free_before - free_after < 4 * 2**20


@pytest.mark.cuda
def test_mapped_memory_on_integrated_gpus(cuda_available):
    from runtime.backends import cuda_mem

    context = cuda_mem.CudaContext()
    if not context.integrated:
        pytest.skip("discrete GPU: mapped zero-copy memory is for integrated (Jetson) GPUs")
    with context:
        buffer = cuda_mem.HostDeviceBuffer((2, 8), np.uint8, mapped=True)
        assert buffer.pointer != 0 and buffer.device_memory is None
        buffer.free()


@pytest.mark.cuda
def test_cuda_graph_capture_and_replay_of_a_copy(cuda_available):
    from runtime.backends import cuda_mem
    from runtime.backends.cuda_graph import DriverGraphs, GraphSlot, import_cuda_driver

    driver = import_cuda_driver()
    if driver is None:
        pytest.skip("cuda-python is not installed: CUDA graphs stay off (pip install cuda-python)")
    context = cuda_mem.CudaContext()
    with context:
        upload = cuda_mem.HostDeviceBuffer((1024,), np.float32)
        download = cuda_mem.HostDeviceBuffer((1024,), np.float32)
        stream = cuda_mem.new_stream()
        slot = GraphSlot(DriverGraphs(driver), cuda_mem.stream_handle(stream), True)

        def enqueue():
            cuda_mem.copy_to_device(upload, stream, 1024)
            return True

        for value in (1.0, 2.0, 3.0):  # warm-up, capture + launch, replay
            upload.host[...] = value
            assert slot.run((1024,), enqueue)
            stream.synchronize()
            import pycuda.driver as cuda

            cuda.memcpy_dtoh(download.host, upload.pointer)
            assert (download.host == value).all()
        assert slot.captures == 1 and slot.replays == 1 and slot.mode == "cuda-graph"
        slot.free()
        upload.free()
        download.free()


@pytest.mark.cuda
def test_the_primary_context_from_worker_threads(cuda_available):
    from runtime.backends import cuda_mem

    context, errors = cuda_mem.CudaContext(), []

    def work():
        try:
            with context:
                buffer = cuda_mem.HostDeviceBuffer((16,), np.float32)
                buffer.free()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def test_cuda_tests_are_all_marked():
    """Every test here but this one carries `gpu` or `cuda`, so `make test` never runs device code."""
    assert not unmarked_device_tests(__name__), unmarked_device_tests(__name__)
