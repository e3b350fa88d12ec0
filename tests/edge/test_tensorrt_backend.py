"""TensorRTBackend's use of TensorRT's runtime API, against a stand-in for TensorRT and the CUDA runtime (neither can
be installed here; the real engine test is tests/export's `tensorrt` test). The stand-in keeps the part of
TensorRT's contract that matters here: an execution context holds one call's input shapes and tensor addresses,
so two calls sharing one at the same time corrupt each other."""
import ctypes
import sys
import threading
import time
import types

import numpy as np

from edge_runtime import tensorrt_engine

FAKE_TRT = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
                                 nptype=lambda dtype: np.float32)


class FakeCudart:
    """Device memory is host memory here: pointers are addresses of numpy buffers, copies are memmove."""
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self) -> None:
        self.buffers, self.lock, self.streams = {}, threading.Lock(), 0

    def cudaStreamCreate(self):
        with self.lock:
            self.streams += 1
            return 0, self.streams

    def cudaMallocAsync(self, nbytes, stream):
        buf = np.empty(max(nbytes, 1), np.uint8)
        with self.lock:
            self.buffers[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cudaFreeAsync(self, ptr, stream):
        with self.lock:
            del self.buffers[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)


class FakeContext:
    """logits[i] = (sum of input row i) twice; slow enough for calls to overlap; notes being shared mid-call."""

    def __init__(self, engine) -> None:
        self.engine, self.shape, self.addresses, self.busy = engine, None, {}, False

    def set_input_shape(self, name, shape):
        if self.busy:
            self.engine.shared.append(name)
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (self.shape[0], 2)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        self.busy = True
        time.sleep(0.01)
        rows, n = self.shape[0], int(np.prod(self.shape))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["input"]))
        out = np.ctypeslib.as_array((ctypes.c_float * (rows * 2)).from_address(self.addresses["logits"]))
        out[:] = np.repeat(x.reshape(rows, -1).sum(1), 2)
        self.busy = False
        return True


class FakeEngine:
    num_io_tensors = 2

    def __init__(self) -> None:
        self.contexts, self.shared = 0, []

    def get_tensor_name(self, i):
        return ("input", "logits")[i]

    def get_tensor_mode(self, name):
        return FAKE_TRT.TensorIOMode.INPUT if name == "input" else FAKE_TRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def create_execution_context(self):
        self.contexts += 1
        return FakeContext(self)


def test_concurrent_calls_never_share_an_execution_context(monkeypatch):
    cudart, engine = FakeCudart(), FakeEngine()
    monkeypatch.setattr(tensorrt_engine, "_cudart", lambda: cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", FAKE_TRT)
    backend = tensorrt_engine.TensorRTBackend("tensorrt", "x.engine", "test", engine)
    backend.idle.put(backend._new_context())

    xs = [np.full((i + 1, 1, 8, 8), i, np.float32) for i in range(8)]
    results = [None] * len(xs)

    def call(i):
        results[i] = backend.run({"input": xs[i]})["logits"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.shared == []  # no context was handed a second call while it ran one
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, np.full((i + 1, 2), 64.0 * i))
    assert 1 < engine.contexts <= len(xs)
    made = engine.contexts
    for x in xs[:3]:  # calls one after another reuse the contexts already made
        backend.run({"input": x})
    assert engine.contexts == made and cudart.streams == made
    assert cudart.buffers == {}  # every device allocation freed
