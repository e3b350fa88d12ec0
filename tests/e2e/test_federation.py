"""End to end with real processes on 127.0.0.1: a Flower SuperLink (coordinator) and SuperNodes (client
daemons), TLS and SuperNode authentication on, free ports, everything stopped by PID."""

import json

import pytest

from fedge.cli.cluster import LocalFederation
from fedge.core.tasks import get_task
from fedge.server.checkpoint import sha256_file
from tests.conftest import run_fedge

pytestmark = pytest.mark.e2e
NAMES = ("acme", "globex", "initech")


def hook_switches(out) -> dict[str, str]:
    """Every environment switch that once (FEDGE_*) or in tests (FEDGE_TEST_*) records or alters updates. A
    production daemon ignores all of them: only the test-only plugin (tests/plugins/client_mods) reads them."""
    return {
        "FEDGE_RECORD_UPDATES": str(out),
        "FEDGE_TEST_RECORD": str(out),
        "FEDGE_FAULT_INJECT": "nan",
        "FEDGE_TEST_FAULT": "nan",
    }


@pytest.fixture(scope="module")
def federation(tmp_path_factory, digits_customers):
    fed = LocalFederation(tmp_path_factory.mktemp("fed"))
    fed.start_coordinator()
    (fed.root / "recorded").mkdir()
    for name, data in zip(NAMES, digits_customers):
        fed.start_client(
            name,
            data,
            "digits",
            extra=["--audit-log", str(fed.root / f"audit-{name}.jsonl")],
            env=hook_switches(fed.root / "recorded"),
        )
    yield fed
    fed.stop_all()


def test_three_client_secagg_run_completes_with_registry_rows(federation):
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "digits",
        "--rounds",
        "2",
        "--min-clients",
        "3",
        "--state",
        str(federation.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "completed" and doc["config"]["secagg"] is True
    # the task's training defaults are recorded as the values customers trained with, not as "-1: the task's"
    assert {k: doc["config"][k] for k in ("local_epochs", "batch_size", "lr", "proximal_mu")} == {
        "local_epochs": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "proximal_mu": 0.0,
    }
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    for r in doc["rounds"]:
        assert r["clients"] == sorted(NAMES)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0
        assert r["checkpoint_sha256"] == sha256_file(r["checkpoint"])
    assert doc["rounds"][1]["accuracy"] > 0.5
    status = run_fedge("run", "status", str(doc["run"]), "--state", str(federation.state))
    assert status.returncode == 0 and "completed" in status.stdout
    # the daemons run with every recording and fault switch set: a production ``fedge client start`` recorded
    # no unmasked update and altered none (NaN updates would have failed the run or its accuracy above)
    assert list((federation.root / "recorded").iterdir()) == []


def test_clients_send_only_model_shaped_arrays_and_scalar_metrics(federation):
    audit = {n: federation.root / f"audit-{n}.jsonl" for n in NAMES}
    before = {n: len(p.read_text().splitlines()) if p.exists() else 0 for n, p in audit.items()}
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "digits",
        "--rounds",
        "1",
        "--min-clients",
        "3",
        "--no-secagg",
        "--state",
        str(federation.state),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    model = get_task("digits").build_model()
    shapes = {tuple(v.shape) for v in model.state_dict().values()}
    scalar = {"int", "float", "str", "bool"}
    for name, path in audit.items():
        entries = [json.loads(line) for line in path.read_text().splitlines()[before[name] :]]
        assert {e["type"] for e in entries} == {"train", "evaluate"}
        for e in entries:
            arrays = [a for rec in e["arrays"].values() for a in rec.values()]
            if e["type"] == "train":
                assert len(arrays) == len(shapes)
                assert all(tuple(a["shape"]) in shapes and a["dtype"] == "float32" for a in arrays)
            else:
                assert arrays == []
            kinds = [k for rec in list(e["metrics"].values()) + list(e["configs"].values()) for k in rec.values()]
            assert set(kinds) <= scalar, kinds


def test_export_makes_a_signed_int8_release_gated_on_customer_data(federation, tmp_path):
    from fedge.edge_runtime.distribution.bundle import generate_keys, load_public_key, verify_bundle

    generate_keys(federation.state / "keys")
    # run 1 trained only 2 rounds: one recovery round after 2:4 pruning, and a gate bound fitting such a model
    out = run_fedge(
        "export",
        "1",
        "--prune",
        "2:4",
        "--recovery-rounds",
        "1",
        "--calibration",
        "entropy",
        "--max-accuracy-drop",
        "0.03",
        "--state",
        str(federation.state),
        "--out",
        str(tmp_path / "release"),
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    gate = summary["gate"]
    assert gate["passed"] and set(gate["per_customer"]) == set(NAMES)
    assert gate["accuracy_drop"] <= 0.03 and gate["top1_agreement"] >= 0.95
    assert manifest_recovery(tmp_path / "release") is not None
    assert summary["int8_size_ratio"] <= 0.35
    manifest = verify_bundle(tmp_path / "release", load_public_key(federation.state / "keys" / "release.pub"))
    assert set(manifest.models) == {"fp32", "int8_cpu", "int8_trt"}
    assert manifest.extra["lineage"]["run"] == 1 and manifest.extra["calibration"]["method"] == "entropy"
    assert manifest.extra["sparsity"]["pattern"] == "2:4"
    listed = run_fedge("release", "list", "--state", str(federation.state), "--json")
    assert json.loads(listed.stdout)[-1]["path"] == str(tmp_path / "release")


def manifest_recovery(bundle):
    return json.loads((bundle / "manifest.json").read_text())["lineage"]["recovery_run"]


def test_app_processes_are_forked_from_warm_launchers(federation):
    """Every SuperNode's SuperExec and the SuperLink's have a pre-imported zygote (fedge.core.warm_exec) to fork
    ClientApp/ServerApp processes from, instead of Flower's cold start per message."""
    from fedge.core.procs import descendants

    def zygotes(pid: int) -> list[str]:
        found = []
        for p in descendants(pid):
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"fedge.core.warm_exec" in argv and b"--zygote" in argv:
                found.append(argv[argv.index(b"--zygote") + 1].decode())
        return found

    assert [m for m in zygotes(federation.coordinator.pid) if "server.server_app" in m], "no ServerApp launcher"
    for name, proc in federation.clients.items():
        assert [m for m in zygotes(proc.pid) if "client.client_app" in m], f"no ClientApp launcher under {name}"
