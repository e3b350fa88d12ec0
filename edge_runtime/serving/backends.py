"""Backends run one model file. Each loads the bundle's model that suits it:

* ``onnxruntime-cpu``: the uint8-activation INT8 model (ONNX Runtime's x86 kernels run it fully in integer),
  FP32 if the bundle has none;
* ``onnxruntime-cuda``: the TensorRT-form (signed, symmetric) INT8 model, which is what ONNX Runtime's GPU
  quantization supports, FP32 as the fallback;
* ``tensorrt``: an engine built on this device by ``fedge edge compile`` (serving.tensorrt_engine).

``auto`` picks the first available of tensorrt, onnxruntime-cuda, onnxruntime-cpu. The choice and the
reason are reported in ModelMetadata and metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError, ModelUnavailable
from fedge.edge_runtime.distribution.bundle import Manifest

log = logging.getLogger("fedge.edge")
BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda")


def default_instances(backend: str) -> int:
    """Batch workers a model gets when neither its config nor ``--instances`` says: Triton's defaults, 2 for a
    CPU model (triton-inference-server/core#82: two calls overlap, so both of a small device's cores work) and
    1 for a GPU model (one per GPU)."""
    return 1 if backend in GPU_BACKENDS else 2


class Backend(Protocol):
    name: str  # one of BACKENDS except auto
    model_file: str  # which file of the bundle it runs
    reason: str  # why this backend and file were chosen

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def gpu_buckets(max_batch: int) -> tuple[int, ...]:
    """1, 4, 16, ... up to ``max_batch`` (included): the batch sizes a GPU model is run at."""
    out = [1]
    while out[-1] * 4 < max_batch:
        out.append(out[-1] * 4)
    return tuple(sorted({*out, max_batch}))


@dataclass
class OrtBackend:
    name: str
    model_file: str
    reason: str
    session: Any  # onnxruntime.InferenceSession
    # CUDA: one session per batch-size bucket, batches padded up to the nearest. Measured on an H100 with ONNX
    # Runtime 1.31 (docs/gpu/BENCHMARKS.md): a CUDA session re-plans every convolution whenever its input shape
    # changes, also back to a shape it ran before (+179 ms per call with the default exhaustive cuDNN search,
    # +52 ms heuristic, +20 ms without search, which also runs 3-5x slower), so dynamic batching's varying batch
    # sizes would pay that on most batches. A session per fixed shape pays it once, in warm_buckets() at load, before
    # the model is visible (+0.2 ms after a switch).
    buckets: dict[int, Any] = field(default_factory=dict)
    output_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def load(cls, path: Path, name: str, reason: str, threads: int = 1, buckets: tuple[int, ...] = ()) -> OrtBackend:
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if name == "onnxruntime-cuda"
            else ["CPUExecutionProvider"]
        )
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        if session.get_providers()[0] != providers[0]:  # ONNX Runtime falls back to CPU with only a warning
            raise ModelUnavailable(
                f"{path.name}: ONNX Runtime could not start {providers[0]} (CUDA or cuDNN"
                f" libraries missing?); the session runs on {session.get_providers()}"
            )
        per_bucket = {
            b: session if i == 0 else ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            for i, b in enumerate(sorted(buckets))
        }
        backend = cls(name=name, model_file=path.name, reason=reason, session=session, buckets=per_bucket)
        backend.warm_buckets()
        return backend

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names
        rows = len(next(iter(inputs.values())))
        size = next((b for b in self.buckets if b >= rows), None)
        if size is None:
            return dict(zip(names, self.session.run(names, inputs)))
        if size > rows:
            inputs = {k: np.concatenate([v, np.zeros((size - rows, *v.shape[1:]), v.dtype)]) for k, v in inputs.items()}
        return {n: out[:rows] for n, out in zip(names, self.buckets[size].run(names, inputs))}

    def warm_buckets(self) -> None:
        """Run every bucket's session at its shape (zeros), so no request pays for planning it."""
        specs = [(i.name, i.shape[1:], _ORT_DTYPES.get(i.type)) for i in self.session.get_inputs()]
        if any(t is None or not all(isinstance(d, int) for d in dims) for _, dims, t in specs):
            return
        for b in self.buckets:
            self.run({name: np.zeros((b, *dims), t) for name, dims, t in specs})


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def import_onnxruntime():
    """The onnxruntime module, or ModelUnavailable saying why it cannot be imported and what to do."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelUnavailable(onnxruntime_import_problem(exc)) from exc
    return onnxruntime


def onnxruntime_import_problem(exc: ImportError) -> str:
    """What failed to import, in words. The case seen on devices: an ONNX Runtime before 1.19 (built against
    NumPy 1.x, as JetPack 6's wheels are) beside NumPy 2 fails with an empty ImportError after printing NumPy's
    warning to stderr."""
    installed = onnxruntime_distributions()
    if not installed:
        return "onnxruntime is not installed: pip install onnxruntime (or the device's onnxruntime-gpu wheel)"
    dist, version = next(iter(installed.items()))
    msg = f"{dist} {version} cannot be imported ({type(exc).__name__}: {str(exc) or 'no message'})"
    ort_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if ort_minor < (1, 19) and int(np.__version__.split(".")[0]) >= 2:
        msg += (
            f"; {dist} before 1.19 is built against NumPy 1.x and this environment has NumPy {np.__version__}:"
            " pip install 'numpy<2', or an onnxruntime >= 1.19"
        )
    return msg


def onnxruntime_distributions() -> dict[str, str]:
    """The ONNX Runtime packages installed here: name -> version (the CPU and the GPU package both provide the
    ``onnxruntime`` module)."""
    from importlib import metadata

    found = {}
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def onnxruntime_conflict() -> str | None:
    """A warning when both the CPU and the GPU package are installed, as ``pip install .`` does on a device that
    has NVIDIA's onnxruntime-gpu (it adds PyPI's onnxruntime): the two write the same module, so whichever was
    installed last is what runs, and ONNX Runtime's install guide asks for only one per environment."""
    installed = onnxruntime_distributions()
    if len(installed) < 2:
        return None
    both = " and ".join(f"{d} {v}" for d, v in installed.items())
    return (
        f"both {both} are installed: they share the onnxruntime module and the one installed last is the one"
        " that runs; keep one (on a GPU device: pip uninstall -y onnxruntime onnxruntime-gpu, then install only"
        " the GPU wheel)"
    )


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def tensorrt_available() -> tuple[bool, str]:
    from fedge.edge_runtime.serving.tensorrt_engine import tensorrt_status

    return tensorrt_status()


def _pick(manifest: Manifest, order: list[str]) -> str:
    """The first of ``order``'s model kinds the bundle holds (a manifest lists at least one model)."""
    found = next((manifest.models[k] for k in order if k in manifest.models), None)
    if found is None:
        raise ModelUnavailable(f"the bundle holds none of {order} (it has {sorted(manifest.models)})")
    return found


def load_backend(
    bundle_dir: Path, manifest: Manifest, preference: str = "auto", threads: int = 1, engine_cache: Path | None = None
) -> Backend:
    if preference not in BACKENDS:
        raise ConfigError(f"unknown backend {preference!r}: use one of {BACKENDS}")
    notes = []
    if preference in ("auto", "tensorrt"):
        ok, why = tensorrt_available()
        if ok:
            from fedge.edge_runtime.serving.tensorrt_engine import TensorRTBackend

            try:
                return TensorRTBackend.load(bundle_dir, manifest, engine_cache)
            except Exception as exc:  # no engine built yet, or incompatible
                why = f"TensorRT present but unusable: {exc}"
        if preference == "tensorrt":
            raise ModelUnavailable(f"backend tensorrt requested: {why}")
        notes.append(why)
    if preference in ("auto", "onnxruntime-cuda"):
        if cuda_available():
            file = _pick(manifest, ["int8_trt", "fp32"])
            try:
                return OrtBackend.load(
                    bundle_dir / file,
                    "onnxruntime-cuda",
                    "; ".join(notes + [f"CUDA provider available: running {file}"]),
                    threads,
                    buckets=gpu_buckets(manifest.max_batch_size),
                )
            except ModelUnavailable as exc:
                if preference == "onnxruntime-cuda":
                    raise
                notes.append(str(exc))
        elif preference == "onnxruntime-cuda":
            raise ModelUnavailable("backend onnxruntime-cuda requested but ONNX Runtime has no CUDAExecutionProvider")
        else:
            notes.append("no CUDAExecutionProvider in this onnxruntime")
    file = _pick(manifest, ["int8_cpu", "fp32"])
    why = (
        "uint8-activation INT8 runs in integer on CPU"
        if file == manifest.models.get("int8_cpu")
        else "no CPU INT8 model in bundle"
    )
    return OrtBackend.load(bundle_dir / file, "onnxruntime-cpu", "; ".join(notes + [f"{why}: running {file}"]), threads)
