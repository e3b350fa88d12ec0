"""Flower's simulation runtime (Ray) running fedge's own ServerApp and the simulation ClientApp: `fedge simulate`
submits a run with `flwr run` to a local SuperLink started with --simulation."""

import json

from tests.conftest import run_fedge


def test_simulated_adaptive_central_dp_raises_a_too_small_clip_and_reports_it(tmp_path):
    """With SecAgg+ on (the norm bits travel beside the masked updates): every update norm is far above the starting
    clip 0.01, so each round (almost) all updates are clipped and the adaptive bound must grow (geometrically, lr
    0.2); the report shows each round's clip and ε."""
    out = run_fedge(
        "simulate",
        "--clients",
        "8",
        "--rounds",
        "4",
        "--dp-noise",
        "0.8",
        "--dp-clip",
        "0.01",
        "--dp-adaptive",
        "--secagg",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Flower's supported path (a --simulation SuperLink and `flwr run`), not the deprecated run_simulation
    assert "deprecated" not in out.stderr.lower() and "Flower run" in out.stderr
    assert json.loads(out.stdout)["status"] == "completed"
    doc = json.loads(run_fedge("run", "privacy", "1", "--state", str(tmp_path), "--json").stdout)
    clips = [r["clip"] for r in doc["rounds"]]
    eps = [r["epsilon"] for r in doc["rounds"]]
    assert doc["central"]["adaptive"] and clips[0] == 0.01
    assert all(b > a for a, b in zip(clips, clips[1:])), clips
    assert all(b > a for a, b in zip(eps, eps[1:])), eps
    sim = doc["rounds"][-1]["customers"]  # no ledger in simulation: each customer's ε covers all 4 rounds
    assert sim and all(abs(v - eps[-1]) < 1e-6 for v in sim.values())
