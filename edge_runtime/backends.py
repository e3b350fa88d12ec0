"""Backends run one model file. Each loads the bundle's model that suits it:

* ``onnxruntime-cpu``: the uint8-activation INT8 model (ONNX Runtime's x86 kernels run it fully in integer),
  FP32 if the bundle has none;
* ``onnxruntime-cuda``: the TensorRT-form (signed, symmetric) INT8 model, which is what ONNX Runtime's GPU
  quantization supports, FP32 as the fallback;
* ``tensorrt``: an engine built on this device by ``fedge edge compile`` (edge_runtime.tensorrt_engine).

``auto`` picks the first available of tensorrt, onnxruntime-cuda, onnxruntime-cpu. The choice and the
reason are reported in ModelMetadata and metrics.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import Manifest
from .errors import ModelUnavailable

log = logging.getLogger("fedge.edge")
BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")


class Backend(Protocol):
    name: str        # one of BACKENDS except auto
    model_file: str  # which file of the bundle it runs
    reason: str      # why this backend and file were chosen

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class OrtBackend:
    name: str
    model_file: str
    reason: str
    session: object

    @classmethod
    def load(cls, path: Path, name: str, reason: str, threads: int = 1) -> "OrtBackend":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if name == "onnxruntime-cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        return cls(name=name, model_file=path.name, reason=reason, session=session)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs)))


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def tensorrt_available() -> tuple[bool, str]:
    from .tensorrt_engine import tensorrt_status

    return tensorrt_status()


def _pick(manifest: Manifest, order: list[str]) -> str | None:
    return next((manifest.models[k] for k in order if k in manifest.models), None)


def load_backend(bundle_dir: Path, manifest: Manifest, preference: str = "auto", threads: int = 1,
                 engine_cache: Path | None = None) -> Backend:
    if preference not in BACKENDS:
        raise ValueError(f"unknown backend {preference!r}: use one of {BACKENDS}")
    notes = []
    if preference in ("auto", "tensorrt"):
        ok, why = tensorrt_available()
        if ok:
            from .tensorrt_engine import TensorRTBackend

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
            return OrtBackend.load(bundle_dir / file, "onnxruntime-cuda",
                                   "; ".join(notes + [f"CUDA provider available: running {file}"]), threads)
        if preference == "onnxruntime-cuda":
            raise ModelUnavailable("backend onnxruntime-cuda requested but ONNX Runtime has no CUDAExecutionProvider")
        notes.append("no CUDAExecutionProvider in this onnxruntime")
    file = _pick(manifest, ["int8_cpu", "fp32"])
    why = "uint8-activation INT8 runs in integer on CPU" if file == manifest.models.get("int8_cpu") else "no CPU INT8 model in bundle"
    return OrtBackend.load(bundle_dir / file, "onnxruntime-cpu", "; ".join(notes + [f"{why}: running {file}"]), threads)
