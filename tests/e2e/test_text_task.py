"""The text task end to end with real processes on 127.0.0.1: customers with their own label catalogue fine-tune
the pretrained all-MiniLM-L6-v2 with LoRA under SecAgg+, the export makes an INT8 text release that tokenizes on
the device; an unknown label and a customer holding a different base are refused, saying why."""

import csv
import json
import shutil

import pytest

from fedge.cli.cluster import LocalFederation
from tests.conftest import run_fedge

pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e
NAMES = ("acme", "globex", "initech")
CATALOGUE = {"lost_card": "card", "check_balance": "money", "network_outage": "network", "upgrade_device": "phone"}


def write_customers(root, per_label: int = 16) -> list:
    """Four shipped intents renamed into a catalogue of the customers' own (which the intent task does not know),
    ``per_label`` examples each, dealt round-robin to three customers."""
    from fedge.core.tasks.intent import IntentTask

    texts, labels = IntentTask().reference_texts()
    rows = [
        (t, CATALOGUE[lab]) for lab in CATALOGUE for t in [t for t, l2 in zip(texts, labels) if l2 == lab][:per_label]
    ]
    files = []
    for k, name in enumerate(NAMES):
        path = root / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows[k :: len(NAMES)])
        files.append(path)
    return files


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    fed = LocalFederation(root / "fed")
    fed.start_coordinator()
    for name, data in zip(NAMES, write_customers(root)):
        fed.start_client(name, data, "text", extra=["--audit-log", str(fed.root / f"audit-{name}.jsonl")])
    (root / "labels.txt").write_text("# the customers' catalogue\n" + "\n".join(CATALOGUE.values()) + "\n")
    fed.labels_file = root / "labels.txt"
    yield fed
    fed.stop_all()


def test_own_catalogue_run_sends_only_adapters_and_head_and_exports_an_int8_text_release(federation, tmp_path):
    from fedge.core.tasks import get_task
    from fedge.export.transformer import qdq_structure

    out = run_fedge(
        "run",
        "launch",
        "--task",
        "text",
        "--labels",
        str(federation.labels_file),
        "--rounds",
        "2",
        "--min-clients",
        "3",
        "--state",
        str(federation.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "completed" and doc["config"]["secagg"] is True
    assert json.loads(doc["config"]["labels"]) == list(CATALOGUE.values())
    assert doc["rounds"][-1]["accuracy"] >= 0.75

    model = get_task("text").build_model()
    trainable = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert all("lora_" in k or k.startswith("head.") for k in trainable) and len(trainable) == 4 * 6 + 2
    full_bytes = 4 * sum(p.numel() for p in model.parameters())
    sent = [m["sent_bytes"] for r in doc["rounds"] for m in r["client_metrics"].values()]
    assert sent and max(sent) <= 0.02 * full_bytes  # the round record: bytes each client sent, <= 2% of the model
    for name in NAMES:  # the customer's own audit: the masked update of each round, <= 2% of the model's bytes
        entries = [json.loads(line) for line in (federation.root / f"audit-{name}.jsonl").read_text().splitlines()]
        updates = [
            e for e in entries if e["type"] == "train" and "masked_params" in e["configs"].get("secaggplus_configs", {})
        ]
        assert len(updates) == 2 and all(0 < e["bytes"] <= 0.02 * full_bytes for e in updates), updates
        assert all(a == {} for e in entries for a in e["arrays"].values())  # nothing else: no arrays in the clear

    from fedge.edge_runtime.distribution.bundle import generate_keys

    generate_keys(federation.state / "keys")
    # 2:4 on the encoder's Linear weights, held on the merged weights through a federated recovery round
    out = run_fedge(
        "export",
        str(doc["run"]),
        "--state",
        str(federation.state),
        "--out",
        str(tmp_path / "rel"),
        "--prune",
        "2:4",
        "--recovery-rounds",
        "1",
        "--max-accuracy-drop",
        "0.1",
        "--json",
    )  # 12 holdout texts: one is 0.083
    assert out.returncode == 0, out.stderr[-3000:]
    release = json.loads(out.stdout)
    gate = release["gate"]
    assert gate["passed"] and set(gate["per_customer"]) == set(NAMES)
    for kind in ("int8_cpu", "int8_trt"):  # both INT8 variants evaluated by every customer through ONNX Runtime
        assert all(kind in v["accuracy"] for v in gate["per_customer"].values()), gate["per_customer"]
        assert gate["variants"][kind]["drop"] <= 0.1 and kind in gate["gated"]  # and both gated
    manifest = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    assert manifest["labels"] == list(CATALOGUE.values())  # the manifest's labels are the run's
    layers = {k: v for k, v in manifest["sparsity"]["layers"].items() if ".layer." in k}
    assert manifest["sparsity"]["pattern"] == "2:4" and len(layers) == 6 * 6 and min(layers.values()) >= 0.5
    assert manifest["lineage"]["recovery_run"] is not None
    assert (
        manifest["inputs"][0]["shape"] == [-1, -1]
        and manifest["preprocessing"]["tokenizer"]["file"] == "tokenizer.json"
    )
    assert (tmp_path / "rel" / "tokenizer.json").exists()
    # QDQ only on the MatMul/Gemm inputs: LayerNorm, Softmax, GELU and the residual Adds read float tensors; the CPU
    # variant also stores the embedding tables in int8 (the Add summing the looked-up rows reads them dequantized)
    for kind, qtype, readers in (("int8_cpu", 2, ["Add", "Gemm", "MatMul"]), ("int8_trt", 3, ["Gemm", "MatMul"])):
        s = qdq_structure(tmp_path / "rel" / f"model.{kind.replace('_', '.')}.onnx")
        assert s["dequantized_into"] == readers, s
        assert s["quantize"] >= 6 * 6 and s["dequantize"] >= s["quantize"], s
        assert s["activation_types"] == [qtype], s  # uint8 activations for CPUs, int8 (symmetric) for TensorRT
    assert release["int8_size_ratio"] <= 0.3


def test_without_secagg_the_audit_shows_only_adapter_and_head_shapes(federation):
    from fedge.core.tasks import get_task

    audit = {n: federation.root / f"audit-{n}.jsonl" for n in NAMES}
    before = {n: len(p.read_text().splitlines()) if p.exists() else 0 for n, p in audit.items()}
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "text",
        "--labels",
        str(federation.labels_file),
        "--rounds",
        "1",
        "--min-clients",
        "3",
        "--no-secagg",
        "--state",
        str(federation.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    model = get_task("text", {"labels": json.dumps(list(CATALOGUE.values()))}).build_model()
    shapes = sorted(list(v.shape) for v in model.state_dict().values())  # LoRA A and B of 6 layers x 2, the head
    total = sum(v.numel() * 4 for v in model.state_dict().values())
    for name, path in audit.items():
        train = [
            json.loads(line)
            for line in path.read_text().splitlines()[before[name] :]
            if json.loads(line)["type"] == "train"
        ]
        (update,) = train
        sent = [a for rec in update["arrays"].values() for a in rec.values()]
        assert sorted(a["shape"] for a in sent) == shapes and all(a["dtype"] == "float32" for a in sent)
        assert total <= update["bytes"] <= total + 200 * len(sent)  # + each array's .npy header (128 bytes)


def test_unknown_label_fails_the_round_naming_file_and_row(federation):
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "text",
        "--labels",
        "card,money,network",
        "--rounds",
        "1",
        "--min-clients",
        "3",
        "--state",
        str(federation.state),
        "--json",
        "--round-timeout",
        "60",
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "unknown label 'phone'" in text and ".csv: row " in text, text[-3000:]


def test_customer_with_a_different_base_refuses_and_says_why(federation, tmp_path):
    from fedge.core.tasks.encoder import default_base_dir

    base = default_base_dir()
    other = tmp_path / "other-base"
    other.mkdir()
    for f in base.iterdir():
        if f.is_file():
            (other / f.name).symlink_to(f)
    (other / "config.json").unlink()
    cfg = json.loads((base / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "layer_norm_eps": 1e-6}))  # another model, same shapes
    data = tmp_path / "umbrella.csv"
    shutil.copyfile(federation.root.parent / "acme.csv", data)
    federation.start_client("umbrella", data, "text", extra=["--base-model", str(other)])
    try:
        out = run_fedge(
            "run",
            "launch",
            "--task",
            "text",
            "--labels",
            str(federation.labels_file),
            "--rounds",
            "1",
            "--min-clients",
            "3",
            "--state",
            str(federation.state),
            "--json",
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        failures = json.loads(out.stdout)["rounds"][0]["failures"]
        assert any("differs from the run's" in f and "other-base" in f for f in failures), failures
    finally:
        federation.stop_client("umbrella")
