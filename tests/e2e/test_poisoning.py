"""Poisoning through real processes: three honest client daemons and one that sends its update sign-flipped and
scaled 10x (the test-only fault mod, tests/plugins/client_mods). Plain FedAvg degrades; screening updates with
--max-update-norm (set from the honest updates' norms the registry records) keeps the run within 2 points of
the clean one. (Median/trimmed-mean/Krum and NaN screening against the same attacks: tests/test_privacy.py.)"""

import json

import pytest

from fedge.cli.cluster import LocalFederation
from fedge.cli.demo import write_customer_data
from tests.conftest import run_fedge
from tests.plugins import client_mods_env

pytestmark = pytest.mark.e2e
HONEST = ("acme", "globex", "initech")


def _run(fed, *flags) -> dict:
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "digits",
        "--rounds",
        "2",
        "--min-clients",
        "3",
        "--no-secagg",
        "--local-epochs",
        "1",
        *flags,
        "--state",
        str(fed.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(out.stdout)


def honest_accuracy(doc: dict) -> float:
    """The final model's accuracy on the honest customers' holdouts only (the same examples in every run)."""
    m = doc["rounds"][-1]["client_metrics"]
    n = sum(m[c]["eval_examples"] for c in HONEST)
    return sum(m[c]["eval_examples"] * m[c]["eval_accuracy"] for c in HONEST) / n


def test_norm_bound_resists_a_poisoning_client(tmp_path, digits_customers):
    fed = LocalFederation(tmp_path / "fed")
    fed.start_coordinator()
    try:
        for name, data in zip(HONEST, digits_customers):
            fed.start_client(name, data, "digits")
        clean = _run(fed)
        honest_norms = [m["update_norm"] for r in clean["rounds"] for m in r["client_metrics"].values()]
        (evil_data,) = write_customer_data(tmp_path / "evil", 0.5, 1, "digits")[:1]
        fed.start_client("mallory", evil_data, "digits", env=client_mods_env(fault="flip:10"))
        attacked = _run(fed)
        bound = 2 * max(honest_norms)
        bounded = _run(fed, "--max-update-norm", f"{bound:.4f}")
    finally:
        fed.stop_all()
    acc = {k: honest_accuracy(d) for k, d in (("clean", clean), ("attacked", attacked), ("bounded", bounded))}
    print(json.dumps({"accuracy": acc, "norm_bound": bound, "honest_norm_max": max(honest_norms)}))
    assert "mallory" in attacked["rounds"][0]["clients"]
    assert acc["attacked"] < acc["clean"] - 0.2  # plain FedAvg degrades
    assert abs(acc["bounded"] - acc["clean"]) <= 0.02  # screened: within 2 points of the clean run
    for r in bounded["rounds"]:
        assert r["clients"] == sorted(HONEST)
        assert [x["customer"] for x in r["refused"]] == ["mallory"] and "exceeds the bound" in r["refused"][0]["reason"]
