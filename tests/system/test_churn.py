"""Scenarios 1 (client churn) and 7 (a customer's data file replaced while its daemon runs), in one run.

Five customers, SecAgg+ on, five rounds, real processes:
- round 2: globex's daemon is SIGKILLed right after it trained (while masked vectors are being collected);
- round 3: hooli's data file is replaced by a corrupt one; its daemon reports the error and keeps running;
- after round 3: hooli's file is restored and globex's daemon restarted (it rejoins);
- round 4: initech's daemon is SIGKILLed the same way.
Every daemon runs with the test-only update-recording mod (tests/plugins/client_mods), so each round's SecAgg+
aggregate (which the coordinator only ever sees masked) is compared with the plain weighted average of the recorded
updates of the customers the registry lists for that round.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.cli.cluster import LocalFederation
from fedge.cli.demo import write_customer_data
from fedge.core.tasks import get_task
from fedge.core.tasks.training import exchanged_names
from fedge.server.checkpoint import load_checkpoint
from tests.e2e.helpers import json_tail, start_launch, wait_exit, wait_rounds
from tests.plugins import client_mods_env

pytestmark = pytest.mark.system
NAMES = ("acme", "globex", "initech", "umbrella", "hooli")


def wait_file(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout}s")
        time.sleep(0.05)


def replace(path: Path, data: bytes) -> None:
    """Swap the file's contents the way a customer's ETL job would: write aside, then rename over it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def corrupt_digits(path: Path, row: int) -> bytes:
    with np.load(path) as f:
        x, y = f["x"], f["y"].copy()
    y[row] = 11  # a label the task does not have
    out = path.with_name("corrupt.npz")
    np.savez(out, x=x, y=y)
    return out.read_bytes()


def plain_average(records: Path, rnd: int, names: list[str]) -> list[np.ndarray]:
    loaded = [np.load(records / f"round-{rnd:02d}-{n}.npz") for n in names]
    weights = np.array([float(f["weight"]) for f in loaded])
    count = len([k for k in loaded[0].files if k != "weight"])
    return [
        sum(w * f[f"a{i}"].astype(np.float64) for w, f in zip(weights, loaded)) / weights.sum() for i in range(count)
    ]


def max_diff(checkpoint: str, names: list[str], expected: list[np.ndarray]) -> float:
    state, _ = load_checkpoint(Path(checkpoint))
    return max(float(np.abs(state[n] - e).max()) for n, e in zip(names, expected))


def test_churn_and_bad_data_with_secagg(tmp_path, report):
    files = write_customer_data(tmp_path, alpha=1.0, seed=1, names=NAMES)
    data = dict(zip(NAMES, files))
    records = tmp_path / "updates"
    records.mkdir()
    env = client_mods_env(record=records)
    started = time.monotonic()
    with LocalFederation(tmp_path / "fed") as fed:
        fed.start_coordinator()
        for name in NAMES:
            fed.start_client(name, data[name], "digits", env=env)
        log = tmp_path / "launch.out"
        launch = start_launch(
            fed.state, log, "--task", "digits", "--rounds", "5", "--min-clients", "3", "--round-timeout", "30"
        )

        wait_rounds(fed.state, 1, 1)
        wait_file(records / "round-02-globex.npz")  # globex has trained round 2 and is about to send
        fed.kill_client("globex")

        wait_rounds(fed.state, 1, 2)
        good = data["hooli"].read_bytes()
        replace(data["hooli"], corrupt_digits(data["hooli"], row=3))

        wait_rounds(fed.state, 1, 3)
        replace(data["hooli"], good)
        fed.start_client("globex", data["globex"], "digits", env=env)  # same key: it rejoins as itself

        wait_file(records / "round-04-initech.npz")
        fed.kill_client("initech")

        assert wait_exit(launch, 600) == 0, log.read_text()[-3000:]
        doc = json_tail(log.read_text())
        hooli_alive = fed.clients["hooli"].poll() is None
        hooli_log = (fed.root / "clients" / "hooli" / "logs" / "supernode.log").read_text()
    wall = time.monotonic() - started

    rounds = doc["rounds"]
    took_part = {r["round"]: r["clients"] for r in rounds}
    assert doc["status"] == "completed" and sorted(took_part) == [1, 2, 3, 4, 5]
    assert took_part[1] == sorted(NAMES)
    assert "globex" not in took_part[3]  # killed in round 2, restarted once round 3 ended
    assert "globex" in took_part[5]  # the restarted daemon rejoined (in round 4 if it
    #                                                              registered before round 4 sampled its nodes)
    assert "initech" not in took_part[5]
    assert all(len(c) >= 3 for c in took_part.values())
    for rnd, name in ((2, "globex"), (4, "initech")):  # killed before its masked update got out: named
        if name not in took_part[rnd]:
            assert any(f.startswith(f"{name} (node ") for f in rounds[rnd - 1]["failures"]), rounds[rnd - 1]

    # the corrupt file: the error names the file and the row, reaches the operator, and the daemon lives on
    assert "hooli" not in took_part[3]
    bad = f"DataError: {data['hooli']}: row 3: unknown label 11"
    assert any(bad in f for f in rounds[2]["failures"]), rounds[2]["failures"]
    assert "hooli" in took_part[5]  # restored file: trains again
    assert hooli_alive and "unknown label 11" in hooli_log

    # SecAgg+ with dropouts still yields exactly the weighted average of the updates that took part
    names = exchanged_names(get_task("digits").build_model(), ())
    diffs = {}
    for r in rounds:
        expected = plain_average(records, r["round"], r["clients"])
        diffs[r["round"]] = max_diff(r["checkpoint"], names, expected)
        assert diffs[r["round"]] < 1e-3, (r["round"], diffs[r["round"]])
    # and the check can tell: counting a dropped customer's recorded update in (or, should both killed daemons
    # have got their masked update out before dying, leaving a customer out) would be visibly off
    dropped = [
        (r["round"], n)
        for r in rounds
        for n in ("globex", "initech")
        if n not in r["clients"] and (records / f"round-{r['round']:02d}-{n}.npz").exists()
    ]
    rnd, wrong = (dropped[0][0], took_part[dropped[0][0]] + [dropped[0][1]]) if dropped else (1, took_part[1][1:])
    assert max_diff(rounds[rnd - 1]["checkpoint"], names, plain_average(records, rnd, wrong)) > 10 * diffs[rnd]

    report["churn"] = {
        "customers": len(NAMES),
        "rounds": len(rounds),
        "wall_s": round(wall, 1),
        "clients_per_round": {str(k): v for k, v in took_part.items()},
        "failures_per_round": {str(r["round"]): len(r["failures"]) for r in rounds},
        "max_abs_diff_secagg_vs_plain": max(diffs.values()),
        "round_wall_s": [r["wall_s"] for r in rounds],
    }
