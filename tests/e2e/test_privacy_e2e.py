"""The customer's privacy ledger through real processes: a coordinator and three client daemons on 127.0.0.1,
one customer with a tiny budget (--max-epsilon 3.5). Central DP sigma = 2: its rounds cost ε 2.003, 2.953,
3.719 (cumulative, δ = 1e-5), so that customer trains rounds 1-2 of run 1 and refuses round 3 and every round
after; the refusal reaches the operator, the ledger survives a restart and an edited ledger stops the daemon."""

import json
import re
import time

import pytest

from fedge.cli.cluster import LocalFederation
from fedge.core.privacy import epsilon
from tests.conftest import run_fedge

pytestmark = pytest.mark.e2e
NAMES = ("acme", "globex", "initech")
BUDGET = ["--max-epsilon", "3.5", "--delta", "1e-5"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory, digits_customers):
    fed = LocalFederation(tmp_path_factory.mktemp("fed-privacy"))
    fed.start_coordinator()
    for name, data in zip(NAMES, digits_customers):
        fed.start_client(name, data, "digits", extra=BUDGET if name == "acme" else [])
    fed.data = dict(zip(NAMES, digits_customers))
    yield fed
    fed.stop_all()


def _launch(fed, rounds: int) -> dict:
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "digits",
        "--rounds",
        str(rounds),
        "--min-clients",
        "2",
        "--no-secagg",
        "--dp-noise",
        "2.0",
        "--dp-clip",
        "1.0",
        "--local-epochs",
        "1",
        "--state",
        str(fed.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout)


def _wait_log(path, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text()[-2000:] if path.exists() else 'missing'}")


def test_budget_is_enforced_reported_and_survives_restarts(fed):
    doc = _launch(fed, 3)
    r1, r2, r3 = doc["rounds"]
    assert r1["clients"] == r2["clients"] == sorted(NAMES)
    assert r3["clients"] == ["globex", "initech"]
    assert [x["customer"] for x in r3["refused"]] == ["acme"]
    assert "would bring this customer's ε to 3.719 > limit 3.5" in r3["refused"][0]["reason"]
    for i, r in enumerate(doc["rounds"], start=1):
        assert r["epsilon"] == pytest.approx(epsilon([(2.0, 1.0, i)], 1e-5))
    status = run_fedge("run", "status", str(doc["run"]), "--state", str(fed.state))
    assert "round 3: acme refused to train: round 3 would bring this customer" in status.stdout
    report = run_fedge("run", "privacy", str(doc["run"]), "--state", str(fed.state), "--json")
    priv = json.loads(report.stdout)
    assert priv["central"]["on"] and priv["central"]["steps"] == 3 and priv["accountant"].startswith("opacus")

    # a second run: on top of run 1's 2.953 even one round does not fit
    doc2 = _launch(fed, 1)
    assert [x["customer"] for x in doc2["rounds"][0]["refused"]] == ["acme"]

    acme_state = fed.root / "clients" / "acme"
    ledger = json.loads(run_fedge("client", "ledger", "--state", str(acme_state), "--json").stdout)
    assert ledger["total_epsilon"] == pytest.approx(epsilon([(2.0, 1.0, 2)], 1e-5))
    assert [len(r["rounds"]) for r in ledger["runs"]] == [2, 0] and [len(r["refused"]) for r in ledger["runs"]] == [
        1,
        1,
    ]

    # the ledger survives a daemon restart ...
    log = fed.root / "logs" / "client-acme.out"
    fed.stop_client("acme")
    fed.start_client("acme", fed.data["acme"], "digits", register=False, extra=BUDGET)
    _wait_log(log, "spent so far 2.953")
    # ... and an edited one stops the daemon before it connects, naming the file and line
    fed.stop_client("acme")
    path = acme_state / "privacy-ledger.jsonl"
    lines = path.read_text().splitlines()
    edited = re.sub(r'"epsilon_run": [0-9.]+', '"epsilon_run": 0.1', lines[0])
    assert edited != lines[0]
    path.write_text("\n".join([edited] + lines[1:]) + "\n")
    proc = fed.start_client("acme", fed.data["acme"], "digits", register=False, extra=BUDGET)
    assert proc.wait(timeout=60) != 0
    assert "privacy-ledger.jsonl:1: entry does not match its hash chain" in log.read_text()
    fed.clients.pop("acme")
