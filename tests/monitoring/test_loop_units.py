"""The loop's pieces on the coordinator's side, without processes: the drift alarm's false-alarm rate, the
temperature the export fits, a run from a release (catalogue extension), several data files of one customer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedge.core.tasks.data import Dataset, concat
from fedge.edge_runtime.common.errors import ConfigError, NotFoundError
from fedge.edge_runtime.monitoring.measures import (
    CONFIDENCE_BINS,
    TEMPERATURE_GRID,
    drift_score,
    drifted,
    match_temperature,
    softmax,
)
from fedge.export.reference import monitoring_reference
from fedge.server.from_release import extend_head, release_start
from fedge.server.registry import Registry
from fedge.server.run_config import RunConfig


def _reference(rng, p_class, p_conf, n) -> dict:
    return {
        "class_counts": rng.multinomial(n, p_class).tolist(),
        "confidence_counts": rng.multinomial(n, p_conf).tolist(),
    }


@pytest.mark.parametrize("n_ref, window", [(66, 50), (300, 200), (1000, 1000)])
def test_the_alarm_stays_near_one_percent_on_unshifted_windows_and_fires_on_a_shift(n_ref, window) -> None:
    rng = np.random.default_rng(1)
    p_class = rng.dirichlet(np.ones(12) * 3)
    p_conf = np.array([0, 0, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.22, 0.4])
    ref = _reference(rng, p_class, p_conf, n_ref)
    alarms = 0
    for _ in range(300):
        w = _reference(rng, p_class, p_conf, window)
        alarms += drifted(drift_score(ref, w["class_counts"], w["confidence_counts"]))
    assert alarms / 300 <= 0.03  # 1% by construction, with this test's own sampling error
    shifted = _reference(rng, p_class, np.roll(p_conf, -4), window)  # far less sure
    assert drifted(drift_score(ref, shifted["class_counts"], shifted["confidence_counts"]))


def test_the_temperature_makes_the_holdouts_mean_confidence_their_accuracy() -> None:
    rng = np.random.default_rng(0)
    n, c = 500, 6
    y = rng.integers(0, c, n)
    right = rng.random(n) < 0.85
    pred = np.where(right, y, (y + 1) % c)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), pred] += 2.0  # underconfident: a sharper temperature (< 1) fits
    sums = [float(softmax(logits, t).max(1).sum()) for t in TEMPERATURE_GRID]
    t = match_temperature(TEMPERATURE_GRID, sums, int(right.sum()), n)
    assert t < 1 and abs(softmax(logits, t).max(1).mean() - right.mean()) < 0.02
    stats = {
        "examples": n,
        "correct": int(right.sum()),
        "class_counts": np.bincount(pred, minlength=c).tolist(),
        "grid": list(TEMPERATURE_GRID),
        "nll": [float(-np.log(softmax(logits, t)[np.arange(n), y]).sum()) for t in TEMPERATURE_GRID],
        "confidence_sum": sums,
        "confidence_counts": [[n // CONFIDENCE_BINS] * CONFIDENCE_BINS for _ in TEMPERATURE_GRID],
        "kind": "int8_cpu",
    }
    ref = monitoring_reference({"a": {"monitoring": stats}, "b": {"monitoring": stats}})
    assert ref["temperature"] == t and ref["examples"] == 2 * n and ref["customers"] == ["a", "b"]
    assert abs(ref["estimated_accuracy"] - ref["holdout_accuracy"]) < 0.02
    assert monitoring_reference({"a": {"accuracy": {}}}) == {}  # a client of an older fedge: no reference


def test_a_catalogue_that_extends_keeps_the_old_head_rows() -> None:
    old = {"head.weight": np.ones((3, 4)), "head.bias": np.ones(3), "enc": np.full((5, 5), 2.0)}
    fresh = {"head.weight": np.zeros((5, 4)), "head.bias": np.zeros(5), "enc": np.zeros((5, 5))}
    got = extend_head(old, fresh, 3, 5)
    assert (got["head.weight"][:3] == 1).all() and (got["head.weight"][3:] == 0).all()
    assert got["head.bias"].tolist() == [1, 1, 1, 0, 0] and (got["enc"] == 2).all()


def _registry_with_release(tmp_path, labels=("a", "b", "c")) -> Registry:
    from fedge.server.registry import RoundRecord

    reg = Registry(tmp_path / "registry.db")
    run = reg.create_run("intent", 1, {"task": "intent", "labels": json.dumps(list(labels))})
    ckpt = tmp_path / "ckpt.safetensors"
    ckpt.write_bytes(b"x")
    reg.add_round(run, RoundRecord(1, 0.9, 0.1, ["a"], {}, [], 1.0, str(ckpt), "sha"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    lineage = {"run": run, "round": 1, "checkpoint_sha256": "sha", "recovery_run": None}
    (bundle / "manifest.json").write_text(json.dumps({"labels": list(labels), "lineage": lineage}))
    reg.add_release(run, 1, str(bundle), "m" * 64, {})
    return reg


def test_a_run_from_a_release_starts_from_its_checkpoint_and_checks_the_catalogue(tmp_path) -> None:
    reg = _registry_with_release(tmp_path)
    cfg = release_start(reg, RunConfig(task="intent", from_release=1, labels=json.dumps(["a", "b", "c", "d"])))
    assert cfg.init.endswith("ckpt.safetensors") and json.loads(cfg.init_labels) == ["a", "b", "c"]
    assert json.loads(cfg.labels) == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="must extend release 1's catalogue"):
        release_start(reg, RunConfig(task="intent", from_release=1, labels=json.dumps(["b", "a", "c"])))
    with pytest.raises(NotFoundError, match="no such release"):
        release_start(reg, RunConfig(task="intent", from_release=7))
    with pytest.raises(ConfigError, match="give one"):
        release_start(reg, RunConfig(task="intent", from_release=1, init="x"))
    with pytest.raises(ConfigError, match="is a 'intent' model"):
        release_start(reg, RunConfig(task="digits", from_release=1))


def test_several_data_files_concatenate_with_padding() -> None:
    a = Dataset(np.ones((2, 3), np.int64), np.array([0, 1]))
    b = Dataset(np.full((1, 5), 7, np.int64), np.array([2]))
    both = concat([a, b], pad=9)
    assert both.x.shape == (3, 5) and both.x[0].tolist() == [1, 1, 1, 9, 9] and both.y.tolist() == [0, 1, 2]


def test_the_loop_flags_parse_as_documented(tmp_path) -> None:
    from fedge.cli.commands import _run_config, build_parser
    from fedge.client.daemon import node_config
    from fedge.client.trainer import NodeSettings

    parser = build_parser()
    a = parser.parse_args(["run", "launch", "--task", "intent", "--rounds", "2", "--from-release", "3"])
    cfg = _run_config(a)
    assert (cfg.from_release, cfg.max_forgetting) == (3, 0.01)
    a = parser.parse_args(["export", "2", "--out", "r2", "--max-forgetting", "0.02"])
    assert a.max_forgetting == 0.02
    a = parser.parse_args(["fleet", "health", "--json", "--drift-threshold", "0.2"])
    assert a.json and a.drift_threshold == 0.2
    a = parser.parse_args(["edge", "feedback", "export", "--store", "s", "--out", "c.csv"])
    assert a.fn.__name__ == "cmd_feedback_export"
    a = parser.parse_args(
        ["edge", "serve", "--repo", "r", "--trust", "t", "--feedback-store", "fb", "--keep-inputs", "7d"]
    )
    from fedge.edge_runtime.tools.loop_cli import monitor_config

    assert monitor_config(a).keep_inputs_s == 7 * 86400 and monitor_config(a).feedback_store is not None
    a = parser.parse_args(
        ["client", "start", "--coordinator", "c:1", "--task", "intent", "--data", "a.csv", "--data", "b c.csv"]
    )
    assert a.data == ["a.csv", "b c.csv"]
    from fedge.client.daemon import ClientConfig

    nc = node_config(
        ClientConfig(
            "c:1", tmp_path / "a.csv", "intent", "x", tmp_path, insecure=True, more_data=(tmp_path / "b c.csv",)
        )
    )
    from flwr.common.config import parse_config_args

    settings = NodeSettings.from_node_config(parse_config_args([nc]))
    assert settings.more_data == (str((tmp_path / "b c.csv").resolve()),)  # survives Flower's node config parser
