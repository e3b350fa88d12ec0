"""Privacy accounting, the customer's ledger and its hard stop, central-DP fixes and robust aggregation, without
sockets (tests/e2e/test_privacy_e2e.py runs them through real daemons)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fedge.client.clipping import clip_update, update_norm
from fedge.client.ledger import Budget, Ledger, LedgerCorrupt
from fedge.client.privacy_guard import plan_round, refusal
from fedge.core.privacy import epsilon, noise_for_epsilon
from fedge.core.wire import Failure, FailureKind
from fedge.server.central_dp import AdaptiveCentralDP, CentralDP
from fedge.server.strategy import FedgeFedAvg

OK = Status(Code.OK, "")


# -- accountant ---------------------------------------------------------------------------------------------------
def test_epsilon_matches_opacus_stepped_one_step_at_a_time():
    from opacus.accountants import PRVAccountant, RDPAccountant

    rdp, prv = RDPAccountant(), PRVAccountant()
    for _ in range(500):
        rdp.step(noise_multiplier=1.1, sample_rate=0.02)
        prv.step(noise_multiplier=1.1, sample_rate=0.02)
    # the tighter of the two maintained bounds: here PRV's, which RDP's exceeds by a few percent
    assert epsilon([(1.1, 0.02, 500)], 1e-5) == pytest.approx(prv.get_epsilon(1e-5), rel=1e-6)
    assert epsilon([(1.1, 0.02, 500)], 1e-5) < rdp.get_epsilon(1e-5) < 1.2 * epsilon([(1.1, 0.02, 500)], 1e-5)


def test_epsilon_of_the_gaussian_mechanism_matches_its_exact_privacy_curve():
    # sampling rate 1 (central DP): k Gaussian releases of sensitivity 1 at noise sigma are exactly mu-GDP with
    # mu = sqrt(k)/sigma (Dong, Roth, Su 2019); exact eps at delta: the root of
    # Phi(-e/mu + mu/2) - e^e Phi(-e/mu - mu/2) = delta (17.857 for k = 10, sigma = 1, delta = 1e-5)
    import math

    from scipy.optimize import brentq
    from scipy.stats import norm

    mu = math.sqrt(10) / 1.0
    exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - 1e-5, 0, 100)
    eps = epsilon([(1.0, 1.0, 10)], 1e-5)
    assert exact <= eps < exact * 1.005  # an upper bound, and a tight one
    assert epsilon([(1.0, 1.0, 4), (1.0, 1.0, 6)], 1e-5) == pytest.approx(eps)


def test_huge_epsilons_skip_prv_and_stay_upper_bounds():
    from opacus.accountants import RDPAccountant

    rdp = RDPAccountant()
    rdp.history = [(0.5, 0.5, 1000)]  # PRV's grid overflows to inf here after seconds of work
    eps = epsilon([(0.5, 0.5, 1000)], 1e-5)
    assert eps > 100 and eps == pytest.approx(rdp.get_epsilon(1e-5))


def test_epsilon_grows_with_rounds_and_segments_compose():
    eps = [epsilon([(1.0, 0.05, 20 * r)], 1e-5) for r in range(1, 8)]
    assert all(a < b for a, b in zip(eps, eps[1:]))
    assert epsilon([(1.0, 0.05, 20), (1.0, 0.05, 40)], 1e-5) == pytest.approx(epsilon([(1.0, 0.05, 60)], 1e-5))
    assert epsilon([], 1e-5) == 0.0 and epsilon([(0.0, 1.0, 1)], 1e-5) == float("inf")


def test_noise_for_a_target_epsilon_spends_at_most_that():
    sigma = noise_for_epsilon(8.0, 1e-5, 0.05, 300)
    assert 7.0 < epsilon([(sigma, 0.05, 300)], 1e-5) <= 8.0


def test_calibrated_noise_is_cached_per_setting_and_a_broken_cache_is_rewritten(tmp_path, monkeypatch):
    import opacus.accountants.utils as utils

    real, calls = utils.get_noise_multiplier, []
    monkeypatch.setattr(utils, "get_noise_multiplier", lambda **kw: calls.append(kw) or real(**kw))
    cache = tmp_path / "dp-noise-cache.json"
    first = noise_for_epsilon(8.0, 1e-5, 0.05, 300, cache)
    assert noise_for_epsilon(8.0, 1e-5, 0.05, 300, cache) == first and len(calls) == 1  # the next round: no search
    assert noise_for_epsilon(4.0, 1e-5, 0.05, 300, cache) > first and len(calls) == 2  # another budget: searched
    assert first == noise_for_epsilon(8.0, 1e-5, 0.05, 300)  # the cached value is the computed one
    cache.write_text("{not json")
    assert noise_for_epsilon(8.0, 1e-5, 0.05, 300, cache) == first and len(calls) == 4
    assert len(json.loads(cache.read_text())) == 1


# -- ledger ---------------------------------------------------------------------------------------------------------
def _entry(run, rnd, eps):
    return {"run": run, "round": rnd, "mechanism": "central", "epsilon_run": eps, "delta": 1e-5, "history": []}


def test_ledger_totals_runs_and_survives_reopening(tmp_path):
    led = Ledger(tmp_path)
    led.append(_entry("c/run-1", 1, 1.0))
    led.append(_entry("c/run-1", 2, 1.5))
    led.append({**_entry("c/run-1", 3, 2.0), "refused": "over the limit"})
    led.append(_entry("c/run-2", 1, 0.7))
    again = Ledger(tmp_path)
    assert again.total() == pytest.approx(2.2)
    runs = again.runs()
    assert runs["c/run-1"]["rounds"] == [1, 2] and runs["c/run-1"]["refused"][0]["round"] == 3
    assert again.document()["total_epsilon"] == pytest.approx(2.2)


@pytest.mark.parametrize(
    "tamper, where",
    [
        (lambda lines: [lines[0].replace('"epsilon_run": 1.0', '"epsilon_run": 0.1')] + lines[1:], ":1:"),
        (lambda lines: [lines[1], lines[0]] + lines[2:], ":1:"),
        (lambda lines: lines[:1] + lines[2:], ":2:"),
        (lambda lines: lines[:-1], "entries removed"),
        (lambda lines: lines + ["{not json"], ":4:"),
    ],
)
def test_an_edited_ledger_is_detected(tmp_path, tamper, where):
    led = Ledger(tmp_path)
    for i in range(3):
        led.append(_entry("c/run-1", i + 1, 1.0 + i))
    path = tmp_path / "privacy-ledger.jsonl"
    path.write_text("\n".join(tamper(path.read_text().splitlines())) + "\n")
    with pytest.raises(LedgerCorrupt, match=where.replace("(", r"\(")):
        led.total()


def test_a_deleted_ledger_is_detected(tmp_path):
    led = Ledger(tmp_path)
    led.append(_entry("c/run-1", 1, 1.0))
    (tmp_path / "privacy-ledger.jsonl").unlink()
    with pytest.raises(LedgerCorrupt, match="missing"):
        led.total()


# -- the hard stop ------------------------------------------------------------------------------------------------
def test_refuses_exactly_the_round_that_would_exceed_the_limit(tmp_path):
    led, budget = Ledger(tmp_path), Budget(3.5, 1e-5)  # sigma 2: rounds cost eps 2.00, 2.95, 3.72 cumulatively
    config = {"fedge-run": "c/run-1", "dp-noise": 2.0, "dp-clip": 1.0}
    decisions = []
    for rnd in (1, 2, 3):
        cost = plan_round({**config, "round": rnd}, led, 1e-5, 100, 10, 1)
        why = refusal(cost, led, budget)
        decisions.append(why)
        led.append({**cost.ledger_body(), **({"refused": why} if why else {})})
    assert decisions[0] is None and decisions[1] is None
    assert "would bring this customer's ε to 3.719 > limit 3.5" in decisions[2]
    # a new run: its first round on top of what run 1 spent does not fit either
    cost = plan_round({**config, "fedge-run": "c/run-2", "round": 1}, led, 1e-5, 100, 10, 1)
    assert refusal(cost, led, budget) is not None
    assert led.total() == pytest.approx(epsilon([(2.0, 1.0, 2)], 1e-5))


def test_non_private_rounds_are_refused_under_a_limit_and_nothing_sent_raises_it(tmp_path):
    led = Ledger(tmp_path)
    cost = plan_round({"fedge-run": "c/run-1", "round": 1, "max-epsilon": 1000}, led, 1e-5, 100, 10, 1)
    assert cost.mechanism == "none"
    assert "not differentially private" in refusal(cost, led, Budget(8, 1e-5))
    assert refusal(cost, led, None) is None  # a customer without a limit trains


def test_dpsgd_cost_is_the_customers_own_and_accumulates_over_rounds(tmp_path):
    led = Ledger(tmp_path)
    config = {"fedge-run": "c/run-1", "dp-sgd": True, "dp-sgd-noise": 1.0, "dp-sgd-clip": 1.0, "dp-noise": 0.0}
    c1 = plan_round({**config, "round": 1}, led, 1e-5, 400, 32, 1)
    led.append(c1.ledger_body())
    c2 = plan_round({**config, "round": 2}, led, 1e-5, 400, 32, 1)
    assert c1.mechanism == "dp-sgd" and c2.history == [[1.0, 0.08, 13], [1.0, 0.08, 13]]  # ceil(400 / 32)
    assert c2.epsilon_run == pytest.approx(epsilon([(1.0, 0.08, 26)], 1e-5)) and c2.epsilon_run > c1.epsilon_run
    # a target ε instead of a noise multiplier: the customer derives sigma for the planned rounds
    c = plan_round(
        {**config, "dp-sgd-noise": 0.0, "dp-sgd-epsilon": 8.0, "planned-rounds": 5, "round": 1},
        Ledger(tmp_path / "other"),
        1e-5,
        400,
        32,
        1,
    )
    assert epsilon([(c.noise, 0.08, 65)], 1e-5) <= 8.0


# -- client-side clipping ---------------------------------------------------------------------------------------
def test_clipping_bounds_the_update_and_passes_a_zero_update():
    rng = np.random.default_rng(0)
    old = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    new = [a + 10 for a in old]
    clipped, fitted = clip_update(new, old, 1.5)
    assert update_norm(clipped, old) == pytest.approx(1.5, rel=1e-5) and not fitted
    small, fitted = clip_update([a + 1e-3 for a in old], old, 1.5)  # inside the bound: untouched
    assert update_norm(small, old) < 1.5 and fitted
    same, fitted = clip_update([a.copy() for a in old], old, 1.5)  # Flower's fixedclipping_mod: ZeroDivisionError
    assert all(np.array_equal(a, b) for a, b in zip(same, old)) and fitted


# -- coordinator: refusals, screening, robust aggregation, central DP -------------------------------------------
def _fit(arrays, n, **metrics):
    return FitRes(OK, ndarrays_to_parameters(arrays), n, metrics)


def _strategy(**kw):
    return FedgeFedAvg(
        min_clients=kw.pop("min_clients", 2),
        wait_timeout=1,
        fit_config={},
        initial_parameters=ndarrays_to_parameters([np.zeros(3, np.float32)]),
        **kw,
    )


def _proxy(i):
    return SimpleNamespace(node_id=i)


def test_refused_and_poisoned_updates_never_reach_the_aggregate():
    s = _strategy(max_update_norm=6.0)
    s.begin_round(1, [np.zeros(3, np.float32)])
    results = [
        (_proxy(1), _fit([np.ones(3, np.float32)], 10, customer="a")),
        (_proxy(2), _fit([np.full(3, 3.0, np.float32)], 10, customer="b")),
        (_proxy(3), _fit([np.zeros(3, np.float32)], 0, customer="c", refused="limit reached")),
        (_proxy(4), _fit([np.array([np.nan, 0, 0], np.float32)], 10, customer="d")),
        (_proxy(5), _fit([np.full(3, 100.0, np.float32)], 10, customer="e")),
    ]
    params, _ = s.aggregate_fit(1, results, [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.full(3, 2.0))
    o = s.outcome
    assert o.clients == ["a", "b"] and o.refused == [{"customer": "c", "reason": "limit reached"}]
    assert [r["customer"] for r in o.rejected] == ["d", "e"]
    assert "NaN" in o.rejected[0]["reason"] and "exceeds the bound 6" in o.rejected[1]["reason"]


@pytest.mark.parametrize("aggregator", ["median", "trimmed-mean", "krum"])
def test_robust_aggregators_resist_one_scaled_sign_flipped_client(aggregator):
    rng = np.random.default_rng(1)
    honest = [np.full(50, 1.0, np.float32) + rng.normal(0, 0.01, 50).astype(np.float32) for _ in range(4)]
    attacker = np.full(50, -100.0, np.float32)
    results = [(_proxy(i), _fit([u], 10, customer=f"c{i}")) for i, u in enumerate(honest + [attacker])]
    fedavg = parameters_to_ndarrays(_strategy().aggregate_fit(1, results, [])[0])[0]
    s = _strategy(aggregator=aggregator)
    s.begin_round(1)
    robust = parameters_to_ndarrays(s.aggregate_fit(1, results, [])[0])[0]
    assert np.abs(fedavg - 1).max() > 10 and np.abs(robust - 1).max() < 0.1


def test_central_dp_keeps_rounds_with_failures_and_calibrates_noise_to_survivors():
    inner = _strategy(min_clients=2)
    dp = CentralDP(inner, noise_multiplier=2.0, clipping_norm=1.0, num_sampled_clients=5)
    inner.begin_round(1)
    zeros = np.zeros(200_000, np.float32)
    results = [(_proxy(i), _fit([zeros], 1, customer=f"c{i}")) for i in range(4)]
    results.append((_proxy(9), _fit([zeros], 0, customer="r", refused="limit")))
    params, _ = dp.aggregate_fit(1, results, [RuntimeError("node 7: timed out")])
    assert params is not None  # Flower's wrapper returns None here: the round would be lost
    noise = parameters_to_ndarrays(params)[0]
    used = inner.outcome.central_dp  # what the registry records for the round
    assert used["survivors"] == 4 and used["stdev"] == pytest.approx(2.0 * 1.0 / 4)
    assert noise.std() == pytest.approx(0.5, rel=0.02)  # not 2/5 (sampled), not 2/6


def _adaptive_round(dp, inner, rnd, norms, bit):
    """One round in which customer i's update has L2 norm ``norms[i]``; ``bit(norm, C)`` is what its mod reports."""
    inner.begin_round(rnd)
    clip = dp.clipping_norm
    results = [
        (_proxy(i), _fit([np.zeros(3, np.float32)], 1, customer=f"c{i}", norm_bit=int(bit(n, clip))))
        for i, n in enumerate(norms)
    ]
    dp.aggregate_fit(rnd, results, [])
    return clip


def test_adaptive_clipping_tracks_the_median_update_norm():
    """Norms 1..9 (median 5), starting far below at 0.1. fedge's bit (1 = fitted under C, as in Andrew et al.)
    brings C to the median; Flower's own mod sets the bit when clipped, and its wrapper then shrinks C further."""
    from flwr.server.strategy import DifferentialPrivacyClientSideAdaptiveClipping

    norms = [float(n) for n in range(1, 10)]
    np.random.seed(0)
    inner = _strategy(min_clients=2)
    ours = AdaptiveCentralDP(inner, noise_multiplier=0.0, initial_clipping_norm=0.1, num_sampled_clients=9)
    for rnd in range(1, 80):
        _adaptive_round(ours, inner, rnd, norms, lambda n, c: n <= c)
    assert 3.5 < ours.clipping_norm < 6.5

    inner = _strategy(min_clients=2)
    flower = DifferentialPrivacyClientSideAdaptiveClipping(
        inner, noise_multiplier=0.0, num_sampled_clients=9, initial_clipping_norm=0.1
    )
    for rnd in range(1, 30):
        inner.begin_round(rnd)
        results = [
            (_proxy(i), _fit([np.zeros(3, np.float32)], 1, customer=f"c{i}", norm_bit=int(n > flower.clipping_norm)))
            for i, n in enumerate(norms)
        ]
        flower.aggregate_fit(rnd, results, [])
    assert flower.clipping_norm < 0.01  # moving away from every update norm


def test_adaptive_dp_noises_with_the_bound_the_customers_clipped_to_and_keeps_failed_rounds():
    inner = _strategy(min_clients=2)
    dp = AdaptiveCentralDP(inner, noise_multiplier=1.0, initial_clipping_norm=2.0, num_sampled_clients=5)
    assert dp.clipped_count_stddev == 1.0 and dp.noise_multiplier == pytest.approx(1.0 / np.sqrt(0.75))
    inner.begin_round(1)
    zeros = np.zeros(200_000, np.float32)
    results = [(_proxy(i), _fit([zeros], 1, customer=f"c{i}", norm_bit=0)) for i in range(4)]
    params, _ = dp.aggregate_fit(1, results, [RuntimeError("node 7: timed out")])
    used = inner.outcome.central_dp
    assert params is not None and used["survivors"] == 4 and used["clip"] == 2.0
    noise = parameters_to_ndarrays(params)[0]
    assert noise.std() == pytest.approx(dp.noise_multiplier * 2.0 / 4, rel=0.02)  # this round's C, not the next
    assert inner.outcome.central_dp["clip"] == 2.0 and inner.outcome.central_dp["next_clip"] != 2.0


def test_non_private_rounds_are_listed_not_summed_and_do_not_break_the_ledger(tmp_path):
    led = Ledger(tmp_path)
    for rnd in (1, 2):  # a customer without a limit in a non-private run: every round is still recorded
        cost = plan_round({"fedge-run": "c/run-1", "round": rnd}, led, 1e-5, 100, 10, 1)
        assert refusal(cost, led, None) is None
        led.append(cost.ledger_body())
    led.append(_entry("c/run-2", 1, 1.25))
    doc = Ledger(tmp_path).document()
    assert doc["total_epsilon"] == pytest.approx(1.25) and doc["non_private_runs"] == ["c/run-1"]
    assert doc["runs"][0]["rounds"] == [1, 2]


def test_without_a_ledger_every_earlier_round_counts():
    """Simulated customers keep no ledger: their round-r cost is the run's first r rounds, not one round's."""
    central = plan_round({"fedge-run": "sim/run-1", "round": 3, "dp-noise": 1.5}, None, 1e-5, 100, 10, 1)
    assert central.epsilon_run == pytest.approx(epsilon([(1.5, 1.0, 3)], 1e-5))
    sgd = plan_round(
        {"fedge-run": "sim/run-1", "round": 2, "dp-sgd": True, "dp-sgd-noise": 1.0}, None, 1e-5, 100, 10, 1
    )
    first = plan_round(
        {"fedge-run": "sim/run-1", "round": 1, "dp-sgd": True, "dp-sgd-noise": 1.0}, None, 1e-5, 100, 10, 1
    )
    assert sgd.epsilon_run > first.epsilon_run
    assert sgd.epsilon_run == pytest.approx(epsilon([(1.0, 0.1, 20)], 1e-5))


def test_a_sampled_node_that_sent_nothing_is_named_in_the_round_failures():
    s = _strategy(min_clients=1)
    three = [(_proxy(i), _fit([np.ones(3, np.float32)], 10, customer=f"c{i}")) for i in (1, 2, 3)]
    s.begin_round(1, [np.zeros(3, np.float32)])
    s.outcome.sampled = [1, 2, 3]
    s.aggregate_fit(1, three, [])
    assert s.outcome.failures == []
    s.begin_round(2, [np.zeros(3, np.float32)])
    s.outcome.sampled = [1, 2, 3, 4]
    s.aggregate_fit(2, three[:1], [Failure(FailureKind.NO_REPLY, 2, "no reply within 30s")])  # as exchange.py makes it
    assert s.outcome.failures == [
        "node 2: no reply within 30s",
        "c3 (node 3): sent no update this round",
        "unknown customer (node 4): sent no update this round",
    ]
    s.begin_round(3, [np.zeros(3, np.float32)])
    s.outcome.sampled = [1, 2, 12]
    s.aggregate_fit(3, three[1:2], [Failure(FailureKind.NO_REPLY, 12, "no reply within 30s")])  # node 12 is not node 1
    assert s.outcome.failures == ["node 12: no reply within 30s", "c1 (node 1): sent no update this round"]


def test_one_error_reply_is_one_failure_even_when_flower_wraps_it_twice():
    from flwr.app import Error

    s = _strategy(min_clients=1)
    s.begin_round(1, [np.zeros(3, np.float32)])
    err = Error(code=2, reason="<class 'fedge.tasks.base.DataError'>:<'/d/h.npz: row 3: unknown label 11'>")
    other = Error(code=2, reason="<class 'fedge.tasks.base.DataError'>:<'/d/h.npz: row 3: unknown label 11'>")
    ok = [(_proxy(1), _fit([np.ones(3, np.float32)], 10, customer="c1"))]
    s.aggregate_fit(1, ok, [Exception(err), Exception(err), Exception(other)])
    assert s.outcome.failures == ["DataError: /d/h.npz: row 3: unknown label 11"] * 2
