"""One typed manifest: what the export writes is what the device reads, with a schema version; keys it does not
know are kept and written back; a manifest from before the schema version reads as schema 1."""

from __future__ import annotations

import json

import pytest

from fedge.edge_runtime.common.errors import BundleError
from fedge.edge_runtime.distribution.bundle import (
    generate_keys,
    load_private_key,
    load_public_key,
    verify_bundle,
    write_bundle,
)
from fedge.edge_runtime.distribution.manifest import FORMAT, SCHEMA_VERSION, Manifest, TensorDesc


def _manifest(**kw) -> Manifest:
    return Manifest(
        model="digits",
        task="digits",
        inputs=(TensorDesc("input", "FP32", (-1, 1, 8, 8)),),
        outputs=(TensorDesc("logits", "FP32", (-1, 10)),),
        models={"fp32": "model.fp32.onnx"},
        **kw,
    )


def test_written_and_read_alike(tmp_path) -> None:
    priv, _ = generate_keys(tmp_path / "keys")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "model.fp32.onnx").write_bytes(b"onnx")
    written = write_bundle(
        bundle, _manifest(lineage={"run": 3, "round": 2}, gate={"passed": True}), load_private_key(priv)
    )
    read = verify_bundle(bundle, load_public_key(tmp_path / "keys" / "trust.pub"))
    assert read == written and read.schema == SCHEMA_VERSION
    assert read.lineage == {"run": 3, "round": 2} and read.gate == {"passed": True}
    assert json.loads((bundle / "manifest.json").read_text())["schema"] == SCHEMA_VERSION


def test_unknown_keys_round_trip() -> None:
    doc = {**_manifest(files={"model.fp32.onnx": "ab"}).to_json(), "drift_reference": {"classes": [3, 4]}, "schema": 3}
    m = Manifest.from_json(doc)
    assert m.unknown == {"drift_reference": {"classes": [3, 4]}} and m.schema == 3
    assert m.to_json() == doc
    assert m.extra["drift_reference"] == {"classes": [3, 4]}


def test_a_manifest_from_before_the_schema_version_reads_as_1() -> None:
    doc = _manifest(files={"model.fp32.onnx": "ab"}).to_json()
    del doc["schema"]
    assert Manifest.from_json(doc).schema == 1


@pytest.mark.parametrize(
    "change",
    [{"format": "other/1"}, {"models": {"fp16": "model.fp32.onnx"}}, {"models": {}}, {"inputs": [{"name": "x"}]}],
)
def test_bad_manifests_are_bundle_errors(change) -> None:
    doc = {**_manifest(files={"model.fp32.onnx": "ab"}).to_json(), **change}
    with pytest.raises(BundleError):
        Manifest.from_json(doc)
    assert FORMAT == "fedge-release/1"
