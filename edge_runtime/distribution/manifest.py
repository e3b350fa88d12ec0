"""The release manifest: one typed definition that the export writes and the device reads.

``manifest.json`` says what a device serves (the graph's inputs and outputs, the model files by kind, the labels,
the preprocessing) and how the release was made (lineage, sparsity, calibration, gate, sizes, ONNX facts). It
carries a schema version; a manifest from before the version existed reads as schema 1. Keys this version does
not know (written by a newer exporter) are kept in ``unknown`` and written back unchanged, so a device or a tool
that rewrites a manifest loses nothing.

    >>> m = Manifest.from_json({"format": FORMAT, "model": "digits", "task": "digits", "inputs": [...], ...})
    >>> m.gate["passed"], m.schema
    (True, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from fedge.edge_runtime.common.errors import BundleError

FORMAT = "fedge-release/1"  # the bundle's format (files, hashes, signature): unchanged since the first release
SCHEMA_VERSION = 3  # the manifest's fields: 1 had no "schema" key; 2 adds it; 3 adds the monitoring reference
MODEL_KINDS = ("fp32", "int8_cpu", "int8_trt")  # model.fp32.onnx, model.int8.cpu.onnx, model.int8.trt.onnx

Section = dict[str, Any]  # a report section (JSON object), as the export stage that made it wrote it


@dataclass(frozen=True)
class TensorDesc:
    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorDesc:
        return cls(str(d["name"]), str(d["datatype"]), tuple(int(s) for s in d["shape"]))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Manifest:
    """What a device needs to serve a release, and how it was made. ``inputs``/``outputs`` describe the ONNX graph;
    for text models ``preprocessing["raw_input"]`` names the BYTES input the server exposes instead, tokenized on
    the device."""

    model: str
    task: str
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    models: dict[str, str]  # kind -> file name (see MODEL_KINDS)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 (filled in by write_bundle)
    labels: tuple[str, ...] = ()
    preprocessing: Section = field(default_factory=dict)
    max_batch_size: int = 64
    schema: int = SCHEMA_VERSION
    lineage: Section = field(default_factory=dict)  # run, round, checkpoint and its sha256, base model
    sparsity: Section = field(default_factory=dict)  # pattern and measured zeros of the shipped weights
    calibration: Section = field(default_factory=dict)  # method, tensors, customers
    gate: Section = field(default_factory=dict)  # the federated accuracy gate's report
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    onnx: Section = field(default_factory=dict)  # opset, parity with PyTorch
    # the drift reference and calibration the device monitors against (fedge.edge_runtime.monitoring): the
    # temperature, class and confidence histograms of the customers' holdouts (counts only); {} in older bundles
    monitoring: Section = field(default_factory=dict)
    unknown: Section = field(default_factory=dict)  # keys this version does not know: kept verbatim

    @property
    def extra(self) -> Section:
        """The sections beyond what serving needs (lineage, sparsity, calibration, gate, sizes, onnx, monitoring)
        and any unknown keys, as one JSON object."""
        return {k: v for k, v in self.to_json().items() if k not in _SERVING}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        try:
            if d.get("format") != FORMAT:
                raise BundleError(f"unsupported bundle format {d.get('format')!r} (expected {FORMAT!r})")
            m = cls(
                model=str(d["model"]),
                task=str(d["task"]),
                inputs=tuple(TensorDesc.from_json(t) for t in d["inputs"]),
                outputs=tuple(TensorDesc.from_json(t) for t in d["outputs"]),
                models={str(k): str(v) for k, v in d["models"].items()},
                files={str(k): str(v) for k, v in d.get("files", {}).items()},
                labels=tuple(str(x) for x in d.get("labels", ())),
                preprocessing=dict(d.get("preprocessing", {})),
                max_batch_size=int(d.get("max_batch_size", 64)),
                schema=int(d.get("schema", 1)),
                **{k: dict(d[k]) for k in _SECTIONS if k in d},
                unknown={k: v for k, v in d.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"malformed manifest: {exc!r}") from None
        m.check()
        return m

    def check(self) -> None:
        for kind, name in self.models.items():
            if kind not in MODEL_KINDS or (self.files and name not in self.files):
                raise BundleError(f"manifest model {kind!r} -> {name!r} is not a known kind with a listed file")
        if not self.models:
            raise BundleError("manifest lists no model")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "schema": self.schema,
            "model": self.model,
            "task": self.task,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "models": self.models,
            "files": self.files,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing,
            "max_batch_size": self.max_batch_size,
        }
        out |= {k: getattr(self, k) for k in _SECTIONS if getattr(self, k)}
        return out | self.unknown

    def with_files(self, files: dict[str, str]) -> Manifest:
        return replace(self, files=dict(files))


_SECTIONS = ("lineage", "sparsity", "calibration", "gate", "sizes", "onnx", "monitoring")
_SERVING = {
    "format",
    "schema",
    "model",
    "task",
    "inputs",
    "outputs",
    "models",
    "files",
    "labels",
    "preprocessing",
    "max_batch_size",
}
_KNOWN = _SERVING | set(_SECTIONS)
assert _KNOWN | {"unknown"} == {f.name for f in fields(Manifest)} | {"format"}
