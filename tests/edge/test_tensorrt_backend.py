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

from fedge.edge_runtime.serving import tensorrt_engine

FAKE_TRT = types.SimpleNamespace(
    TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=lambda dtype: np.float32
)


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


def fake_tensorrt(version: str, calls: list) -> types.SimpleNamespace:
    """TensorRT's builder API as each major version has it: 8.6 has no strong typing (its network flags are
    EXPLICIT_BATCH=0 and others), 10 adds STRONGLY_TYPED=5, 11 removes the precision builder flags (INT8)."""
    major = int(version.split(".")[0])
    kinds = {"EXPLICIT_BATCH": 0, **({"STRONGLY_TYPED": 5} if major >= 10 else {})}
    builder_flags = {"SPARSE_WEIGHTS": "sparse", **({"INT8": "int8"} if major < 11 else {})}
    net = types.SimpleNamespace(
        num_inputs=1, get_input=lambda i: types.SimpleNamespace(name="input", shape=(-1, 1, 8, 8))
    )
    cache = types.SimpleNamespace(serialize=lambda: b"timing")
    config = types.SimpleNamespace(
        set_memory_pool_limit=lambda pool, size: None,
        set_flag=lambda flag: calls.append(("flag", flag)),
        add_optimization_profile=lambda p: None,
        create_timing_cache=lambda raw: cache,
        set_timing_cache=lambda c, ignore_mismatch: None,
        get_timing_cache=lambda: cache,
    )
    profile = types.SimpleNamespace(set_shape=lambda name, lo, opt, hi: calls.append(("shape", name, lo, opt, hi)))

    def create_network(flags):
        calls.append(("network", flags))
        return net

    builder = types.SimpleNamespace(
        create_network=create_network,
        create_builder_config=lambda: config,
        create_optimization_profile=lambda: profile,
        build_serialized_network=lambda n, c: b"plan",
    )
    return types.SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=lambda logger: builder,
        OnnxParser=lambda n, logger: types.SimpleNamespace(parse=lambda raw: True),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(**kinds),
        BuilderFlag=types.SimpleNamespace(**builder_flags),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
    )


def test_compile_builds_a_qdq_network_as_each_tensorrt_version_needs(monkeypatch, tmp_path):
    """8.6 (JetPack 6.0): explicit batch and the INT8 flag; 10.x (JetPack 6.1+): strongly typed, no precision
    flags; 11: neither (always strongly typed; its BuilderFlag has no INT8 to set)."""
    from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc

    (tmp_path / "model.int8.trt.onnx").write_bytes(b"onnx")
    manifest = Manifest(
        "digits",
        "digits",
        (TensorDesc("input", "FP32", (-1, 1, 8, 8)),),
        (TensorDesc("logits", "FP32", (-1, 10)),),
        {"int8_trt": "model.int8.trt.onnx"},
        {},
    )
    expected = {"8.6.2": (1 << 0, ["int8"]), "10.3.0": (1 << 5, []), "11.0.0": (0, [])}
    for version, (flags, precision) in expected.items():
        calls = []
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls))
        monkeypatch.setattr(
            tensorrt_engine,
            "device_identity",
            lambda version=version: {"tensorrt": version, "gpu": "Orin", "compute_capability": "8.7"},
        )
        engine = tensorrt_engine.compile_engine(
            tmp_path, manifest, tmp_path / "engines" / version, tensorrt_engine.CompileConfig(max_batch=16, sparse=True)
        )
        assert engine.read_bytes() == b"plan", version
        assert ("network", flags) in calls, (version, calls)
        assert sorted(c[1] for c in calls if c[0] == "flag") == sorted(["sparse", *precision]), version
        assert ("shape", "input", (1, 1, 8, 8), (8, 1, 8, 8), (16, 1, 8, 8)) in calls
