"""Coordinator pieces without sockets: aggregation bookkeeping, registry, run config, the FAB and certificates."""

import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import tomllib
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fedge.core.tasks import get_task
from fedge.server.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from fedge.server.fab import write_app
from fedge.server.registry import Registry, RoundRecord
from fedge.server.run_config import RunConfig
from fedge.server.strategy import Evaluation, FedgeFedAvg, InsufficientClients

OK = Status(Code.OK, "")


def _fit(arrays, n, **metrics):
    return FitRes(OK, ndarrays_to_parameters(arrays), n, metrics)


def _strategy(min_clients=2):
    return FedgeFedAvg(
        min_clients=min_clients,
        wait_timeout=1,
        fit_config={},
        initial_parameters=ndarrays_to_parameters([np.zeros(2, np.float32)]),
    )


def test_fedavg_weights_by_examples_and_records_participants():
    s = _strategy()
    s.begin_round(3)
    results = [
        (
            SimpleNamespace(node_id=11),
            _fit(
                [np.array([1.0, 2.0], np.float32)], 10, customer="a", eval_examples=5, eval_loss=1.0, eval_accuracy=0.8
            ),
        ),
        (
            SimpleNamespace(node_id=12),
            _fit(
                [np.array([4.0, 8.0], np.float32)], 30, customer="b", eval_examples=15, eval_loss=0.5, eval_accuracy=0.4
            ),
        ),
    ]
    params, _ = s.aggregate_fit(3, results, [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], [3.25, 6.5])  # (10*[1,2] + 30*[4,8]) / 40
    assert s.outcome.clients == ["a", "b"] and s.outcome.aggregated
    assert s.outcome.prev_eval.accuracy == pytest.approx((5 * 0.8 + 15 * 0.4) / 20)
    assert s.outcome.prev_eval.loss == pytest.approx((5 * 1.0 + 15 * 0.5) / 20)


def test_round_below_min_clients_fails_with_the_numbers():
    s = _strategy(min_clients=3)
    s.begin_round(2)
    results = [(SimpleNamespace(node_id=1), _fit([np.ones(2, np.float32)], 5, customer="a"))]
    with pytest.raises(
        InsufficientClients, match=r"round 2: 1 usable client update\(s\), --min-clients is 3.*timed out"
    ):
        s.aggregate_fit(2, results, [TimeoutError("node 7: timed out")])


def test_final_evaluation_is_weighted_by_holdout_size():
    s = _strategy()
    res = [
        (SimpleNamespace(node_id=1), EvaluateRes(OK, 2.0, 10, {"customer": "a", "accuracy": 0.5})),
        (SimpleNamespace(node_id=2), EvaluateRes(OK, 1.0, 30, {"customer": "b", "accuracy": 0.9})),
    ]
    loss, metrics = s.aggregate_evaluate(5, res, [])
    assert loss == pytest.approx(1.25) and metrics["accuracy"] == pytest.approx(0.8)
    assert Evaluation.aggregate([]) is None


def test_registry_round_trip_and_late_evaluation(tmp_path):
    reg = Registry(tmp_path / "registry.db")
    run = reg.create_run("digits", 3, {"x": 1})
    rec = RoundRecord(
        round=1,
        accuracy=None,
        loss=None,
        clients=["a"],
        client_metrics={"a": {"num_examples": 3}},
        failures=[],
        wall_s=1.5,
        checkpoint="c",
        checkpoint_sha256="ab",
    )
    reg.add_round(run, rec)
    reg.set_round_eval(run, 1, 0.75, 0.3, {"a": {"eval_accuracy": 0.75}})
    got = reg.rounds(run)[0]
    assert (got.accuracy, got.loss) == (0.75, 0.3)
    assert got.client_metrics["a"] == {"num_examples": 3, "eval_accuracy": 0.75}
    with pytest.raises(sqlite3.IntegrityError):  # a round is written once
        reg.add_round(run, rec)
    reg.set_status(run, "failed", "boom")
    assert reg.run(run)["status"] == "failed" and reg.run(run)["reason"] == "boom"


def test_run_config_survives_flower_round_trip_and_validates():
    cfg = RunConfig(fedge_run_id=4, task="intent", num_rounds=7, secagg=False, lr=0.01, freeze="conv*,fc1.*")
    assert RunConfig.from_flower(cfg.to_flower()) == cfg
    assert cfg.freeze_patterns == ("conv*", "fc1.*")
    with pytest.raises(ValueError, match="min_clients >= 2"):
        RunConfig(secagg=True, min_clients=1)
    with pytest.raises(ValueError, match="start_round"):
        RunConfig(num_rounds=2, start_round=3)
    # FedProx: the task's default proximal term unless the operator sets one; none under DP-SGD, which refuses it
    assert (
        RunConfig(task="intent").local_proximal_mu(0.1) == 0.1 and RunConfig(proximal_mu=0).local_proximal_mu(0.1) == 0
    )
    assert RunConfig(dp_sgd=True, dp_sgd_epsilon=8).local_proximal_mu(0.1) == 0
    intent = RunConfig(task="intent", lr=0.01).with_task_defaults(get_task("intent").defaults)
    assert (intent.local_epochs, intent.batch_size, intent.lr, intent.proximal_mu) == (3, 16, 0.01, 0.1)
    with pytest.raises(ValueError, match="--dp-sgd"):
        RunConfig(dp_sgd=True, dp_sgd_epsilon=8, proximal_mu=0.1)


def test_fab_declares_every_run_config_key(tmp_path):
    app = write_app(tmp_path / "app")
    doc = tomllib.loads((app / "pyproject.toml").read_text())
    declared = doc["tool"]["flwr"]["app"]["config"]
    assert set(declared) == set(RunConfig().to_flower())  # Flower rejects overrides of undeclared keys
    assert "app = server.server_app.app" in (app / "fedge_fab" / "server_app.py").read_text()


def test_checkpoint_round_trip_and_hash(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    sha = save_checkpoint(tmp_path / "c.safetensors", state, {"round": "2"})
    assert sha == sha256_file(tmp_path / "c.safetensors")
    loaded, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert meta["round"] == "2" and np.array_equal(loaded["w"], state["w"])


def test_certificates_name_the_hosts_and_keys_are_openssh_ecdsa(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    from fedge.server.certs import init_certs

    paths = init_certs(tmp_path, hosts=["coord.example", "10.1.2.3"], clients=2)
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "coord.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "10.1.2.3"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    bundle = paths.client_dir("client-1")
    key = load_ssh_private_key((bundle / "supernode.key").read_bytes(), None)
    assert key.curve.name == "secp384r1"
    assert (bundle / "ca.crt").read_bytes() == paths.ca.read_bytes()
    assert (bundle / "supernode.key.pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def test_cli_without_torch_or_flwr():
    import subprocess
    import sys

    code = (
        "import sys, fedge.cli, fedge.edge_runtime.serving.tokenizer; fedge.cli.build_parser();"
        "print(sorted({'torch', 'flwr'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_round_short_of_clients_after_failures_is_tried_again_but_not_after_refusals(monkeypatch):
    """As just after a coordinator restart: a SuperNode misses the first attempt; the second has all three."""
    from fedge.server import round_loop

    monkeypatch.setattr(round_loop, "_set_params", lambda *a: None)
    s = _strategy(min_clients=3)
    update = [np.ones(2, np.float32)]
    replies = {name: (SimpleNamespace(node_id=i), _fit(update, 5, customer=name)) for i, name in enumerate("abc")}
    attempts = []

    def fit(grid, ctx, missing=("c",), refusing=()):
        attempts.append(1)
        results = [r for name, r in replies.items() if name not in missing or len(attempts) > 1]
        results = [
            (p, _fit(update, 5, customer=res.metrics["customer"], refused="budget spent"))
            if res.metrics["customer"] in refusing
            else (p, res)
            for p, res in results
        ]
        failures = [TimeoutError("node 2: no reply within 120s")] if len(results) < 3 else []
        s.aggregate_fit(4, results, failures)

    outcome = round_loop._fit_round(None, None, fit, s, {"w": np.zeros(2)}, ["w"], ["w"], 4, attempts=3)
    assert len(attempts) == 2 and outcome.clients == ["a", "b", "c"]
    assert any("attempt 1" in f for f in outcome.failures)  # the registry says a retry happened, and why

    attempts.clear()  # a refusal is final: no second attempt
    with pytest.raises(InsufficientClients, match="refused"):
        round_loop._fit_round(
            None,
            None,
            lambda g, c: fit(g, c, missing=(), refusing=("c",)),
            s,
            {"w": np.zeros(2)},
            ["w"],
            ["w"],
            5,
            attempts=3,
        )
    assert len(attempts) == 1


class _StaleClientManager:
    """Flower's node updater refreshes the registered nodes inside ``all()`` (it wraps it) but not inside
    ``wait_for``, which counts what the updater last saw: here three nodes, of which the SuperLink has since
    counted one gone (it missed heartbeats during a coordinator restart) and counts it back a moment later."""

    def __init__(self):
        self.calls = 0

    def wait_for(self, num_clients, timeout):
        return True

    def all(self):
        self.calls += 1
        ids = [7, 8] if self.calls < 3 else [7, 8, 9]
        return {str(i): SimpleNamespace(node_id=i) for i in ids}


def test_clients_are_counted_as_the_superlink_sees_them_not_as_last_registered():
    s = _strategy(min_clients=3)
    s.begin_round(3)
    ins = s.configure_fit(3, ndarrays_to_parameters([np.zeros(2, np.float32)]), _StaleClientManager())
    assert [proxy.node_id for proxy, _ in ins] == [7, 8, 9]

    s.wait_timeout = 0.3  # a node that stays gone: the bounded wait ends with the count that was there
    never = _StaleClientManager()
    never.all = lambda: {"7": SimpleNamespace(node_id=7)}
    with pytest.raises(InsufficientClients, match="only 1 client"):
        s.configure_fit(3, ndarrays_to_parameters([np.zeros(2, np.float32)]), never)


def test_an_error_the_superlink_writes_for_an_unavailable_node_names_that_node(monkeypatch):
    from flwr.app import Error, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedge.server.exchange import _exchange

    monkeypatch.setattr(TaskIdentity, "_run_id", 5)  # as in a ServerApp process
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

    class Grid:
        def send_and_receive(self, messages, timeout):
            for i, m in enumerate(messages):  # as Flower's grid does when it pushes them
                m.metadata.__dict__["_message_id"] = f"m{i}"
            meta = SimpleNamespace(src_node_id=1, reply_to_message_id="m1")  # 1: the SuperLink's own node id
            return [
                SimpleNamespace(metadata=meta, has_error=lambda: True, error=Error(code=4, reason="Node Unavailable"))
            ]

    ins = [(SimpleNamespace(node_id=nid), None) for nid in (41, 42)]
    _proxies, replies, failures = _exchange(Grid(), ins, "train", lambda ins, keep: RecordDict(), 3, timeout=5)
    assert [nid for nid, _ in replies] == [42]  # the unavailable node, not node 1
    assert [str(f) for f in failures] == ["node 41: no reply within 5s"]  # and no "no reply" for node 42


def test_a_supernode_retries_heartbeats_and_fleet_calls_within_the_caps(monkeypatch):
    import flwr.supercore.heartbeat as heartbeat
    import flwr.supercore.retry.http_retry as http_retry

    from fedge.client.supernode import cap_backoff

    def waits():
        beat = heartbeat.HeartbeatSender(lambda: True)._retry_invoker.wait_gen_factory()
        fleet = http_retry.make_simple_http_retry_invoker().wait_gen_factory()
        return [next(beat) for _ in range(6)], [next(fleet) for _ in range(6)]

    for module in (heartbeat, http_retry):
        monkeypatch.setattr(module, "exponential", module.exponential)  # restored after the test
    assert [max(w) for w in waits()] == [20, 20]  # Flower's own: 1, 2, 4, 8, 16, 20 s
    cap_backoff(heartbeat, 2.0)
    cap_backoff(http_retry, 5.0)
    assert waits() == ([1, 2, 2, 2, 2, 2], [1, 2, 4, 5, 5, 5])
