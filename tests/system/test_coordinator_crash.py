"""Scenario 2 (coordinator crash): the coordinator's whole process tree (SuperLink, SuperExec, the running
ServerApp) is SIGKILLed in the middle of round 3 of 5 and restarted; `fedge run resume` finishes the run.
One customer's SuperNode gives up reconnecting while the coordinator is down (--connect-retries 2): its daemon
must start a new one, which rejoins."""

import json
import time

import pytest

from fedge.cli.cluster import LocalFederation
from fedge.server.checkpoint import sha256_file
from tests.conftest import run_fedge
from tests.e2e.helpers import start_launch, wait_exit, wait_rounds

pytestmark = pytest.mark.system
NAMES = ("acme", "globex", "initech")


def test_killed_coordinator_resumes_from_last_completed_round(tmp_path, digits_customers, report):
    with LocalFederation(tmp_path) as fed:
        fed.start_coordinator()
        for name, data in zip(NAMES, digits_customers):
            fed.start_client(name, data, "digits", extra=["--connect-retries", "2"] if name == "initech" else [])
        launch = start_launch(
            fed.state, tmp_path / "launch.out", "--task", "digits", "--rounds", "5", "--min-clients", "3", "--no-secagg"
        )
        wait_rounds(fed.state, 1, 2)  # round 3 is under way
        fed.kill_coordinator()
        assert wait_exit(launch, 120) != 0  # the operator's launch reports the lost coordinator
        kept = json.loads(run_fedge("run", "status", "1", "--state", str(fed.state), "--json").stdout)["rounds"]
        kept = [(r["round"], r["checkpoint"], r["checkpoint_sha256"]) for r in kept]
        assert [k[0] for k in kept] in ([1, 2], [1, 2, 3])

        gave_up = tmp_path / "logs" / "client-initech.out"
        deadline = time.monotonic() + 60
        while "lost the coordinator" not in gave_up.read_text():
            assert time.monotonic() < deadline, gave_up.read_text()
            time.sleep(0.2)

        fed.start_coordinator()  # same state dir and port; the client daemons reconnect by themselves
        out = run_fedge("run", "resume", "1", "--state", str(fed.state), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(out.stdout)
        assert doc["status"] == "completed" and len(doc["flower_runs"]) == 2
        # the killed run's queued instructions are dropped, not pulled by the reconnecting SuperNodes
        assert f"stopped Flower run {doc['flower_runs'][0]}, left running" in " ".join(out.stderr.split())
        assert [r["round"] for r in doc["rounds"]] == [1, 2, 3, 4, 5]
        for rnd, path, sha in kept:  # completed rounds neither lost nor repeated, checkpoints untouched
            assert doc["rounds"][rnd - 1]["checkpoint_sha256"] == sha == sha256_file(path)
        assert all(r["clients"] == sorted(NAMES) for r in doc["rounds"])  # every daemon came back by itself
        assert doc["rounds"][-1]["accuracy"] > doc["rounds"][0]["accuracy"]
    report["coordinator_crash"] = {
        "rounds_kept": [k[0] for k in kept],
        "redone_from": len(kept) + 1,
        "flower_runs": len(doc["flower_runs"]),
    }
