"""TensorRT path: build an engine from the bundle's ``model.int8.trt.onnx`` on the device that will run it, and
serve it. Written against TensorRT's public Python API (8.6 as in JetPack 6.0, 10.x as in JetPack 6.1+, and 11
where strong typing is always on) plus cuda-python for device memory. NOT RUN IN CI: TensorRT cannot be installed
on the machines fedge is built and tested on; there, ``tensorrt_status()`` reports why and the runtime serves ONNX
with ONNX Runtime.

Engines are tied to the GPU and the TensorRT version, so they are cached under a key of
(ONNX sha256, TensorRT version, GPU name, compute capability).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError, MissingFileError
from fedge.edge_runtime.distribution.bundle import Manifest, sha256_file

log = logging.getLogger("fedge.edge.tensorrt")


def tensorrt_status() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (python package 'tensorrt' missing)"
    try:
        cudart = _cudart()
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            return False, "TensorRT is installed but no CUDA device is visible"
    except ImportError:
        return False, "TensorRT is installed but cuda-python (device memory) is missing"
    return True, "TensorRT and a CUDA device are present"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def device_identity() -> dict:
    import tensorrt as trt

    props = _check(_cudart().cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {
        "tensorrt": trt.__version__,
        "gpu": name.strip("\x00 "),
        "compute_capability": f"{props.major}.{props.minor}",
    }


def cache_key(onnx_sha256: str, identity: dict) -> str:
    raw = json.dumps({"onnx": onnx_sha256, **identity}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def explicit_quantization_flags(trt) -> tuple[int, list]:
    """(network creation flags, builder flags) with which this TensorRT builds a Q/DQ network as quantized.
    11: always strongly typed, neither is needed. 9.1-10.x: strongly typed by a network flag (no precision
    builder flags: "not required and should not be specified"). 8.x (JetPack 6.0's 8.6): no strong typing, so
    the INT8 builder flag, without which it will not run Q/DQ layers in INT8, and explicit batch (implicit
    batch was its default; 10 dropped it)."""
    major = int(trt.__version__.split(".")[0])
    kinds = trt.NetworkDefinitionCreationFlag
    flags, precision = 0, []
    if major < 10:
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if major < 11:
        if hasattr(kinds, "STRONGLY_TYPED"):
            flags |= 1 << int(kinds.STRONGLY_TYPED)
        else:
            precision.append(trt.BuilderFlag.INT8)
    return flags, precision


@dataclass(frozen=True)
class CompileConfig:
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64
    workspace_bytes: int = 1 << 30
    sparse: bool = False  # set for 2:4-pruned models: TensorRT may then pick sparse tactics

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {self}")


def compile_engine(bundle_dir: Path, manifest: Manifest, cache_dir: Path, cfg: CompileConfig) -> Path:
    """Build (or reuse) the engine for this bundle on this device; returns the engine file."""
    import tensorrt as trt

    onnx_path = Path(bundle_dir) / manifest.models["int8_trt"]
    identity = device_identity()
    key = cache_key(sha256_file(onnx_path), identity)
    cache_dir = Path(cache_dir)
    engine_path = cache_dir / f"{key}.engine"
    if engine_path.exists():
        log.info("engine cache hit %s", engine_path)
        return engine_path
    cache_dir.mkdir(parents=True, exist_ok=True)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, precision = explicit_quantization_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_bytes)
    if cfg.sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    for flag in precision:  # INT8 on 8.x only: precision comes from the Q/DQ nodes and strong typing
        config.set_flag(flag)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (cfg.min_batch, *dims), (cfg.opt_batch, *dims), (cfg.max_batch, *dims))
    config.add_optimization_profile(profile)

    timing_path = cache_dir / f"timing-{identity['compute_capability']}-{identity['tensorrt']}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name}")
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    (cache_dir / f"{key}.json").write_text(
        json.dumps({**identity, "onnx": onnx_path.name, "sparse": cfg.sparse, "max_batch": cfg.max_batch}, indent=2)
    )
    return engine_path


@dataclass
class TensorRTBackend:
    """An engine and its execution contexts. A context (and its stream) serves one call at a time, as Triton runs
    one per model instance; concurrent calls (the unbatched server's threads, several batch instances) each lease
    one, made the first time there are that many at once and reused after."""

    name: str
    model_file: str
    reason: str
    engine: Any  # tensorrt.ICudaEngine
    idle: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (context, stream) not in use

    @classmethod
    def load(cls, bundle_dir: Path, manifest: Manifest, cache_dir: Path | None) -> TensorRTBackend:
        import tensorrt as trt

        onnx_path = Path(bundle_dir) / manifest.models["int8_trt"]
        cache_dir = Path(cache_dir or Path(bundle_dir).parent.parent / ".engines")
        engine_path = cache_dir / f"{cache_key(sha256_file(onnx_path), device_identity())}.engine"
        if not engine_path.exists():
            raise MissingFileError(f"no engine for this device: run `fedge edge compile` ({engine_path})")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:  # built by another TensorRT version or for another GPU
            raise RuntimeError(f"engine {engine_path} does not deserialize on this device")
        backend = cls(
            "tensorrt", engine_path.name, f"TensorRT engine built on this device from {onnx_path.name}", engine
        )
        backend.idle.put(backend._new_context())
        return backend

    def _new_context(self) -> tuple[object, object]:
        context = self.engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device memory?)")
        return context, _check(_cudart().cudaStreamCreate())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            context, stream = self.idle.get_nowait()
        except queue.Empty:
            context, stream = self._new_context()
        try:
            return self._run(context, stream, inputs)
        finally:
            self.idle.put((context, stream))

    def _run(self, context, stream, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorrt as trt

        cudart = _cudart()
        allocations, outputs = [], {}
        try:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            for name in names:
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    host = np.ascontiguousarray(inputs[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
                    context.set_input_shape(name, host.shape)
                    ptr = _check(cudart.cudaMallocAsync(host.nbytes, stream))
                    allocations.append(ptr)
                    _check(
                        cudart.cudaMemcpyAsync(
                            ptr, host.ctypes.data, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
                        )
                    )
                    context.set_tensor_address(name, ptr)
            for name in names:
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                    host = np.empty(
                        tuple(context.get_tensor_shape(name)), dtype=trt.nptype(self.engine.get_tensor_dtype(name))
                    )
                    ptr = _check(cudart.cudaMallocAsync(host.nbytes, stream))
                    allocations.append(ptr)
                    context.set_tensor_address(name, ptr)
                    outputs[name] = (host, ptr)
            if not context.execute_async_v3(stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for host, ptr in outputs.values():
                _check(
                    cudart.cudaMemcpyAsync(
                        host.ctypes.data, ptr, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
                    )
                )
            _check(cudart.cudaStreamSynchronize(stream))
            return {name: host for name, (host, _) in outputs.items()}
        finally:
            for ptr in allocations:
                cudart.cudaFreeAsync(ptr, stream)
