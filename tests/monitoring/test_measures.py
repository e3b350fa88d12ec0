"""The loop's measures and the device's health window: the drift measure, the estimate, the summary's checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.edge_runtime.monitoring.measures import (
    CONFIDENCE_BINS,
    TEMPERATURE_GRID,
    confidence_and_entropy,
    drift_score,
    fit_temperature,
    js_distance,
    psi,
    softmax,
)
from fedge.edge_runtime.monitoring.summary import InvalidSummary, check, signals
from fedge.edge_runtime.monitoring.window import VersionHealth


def test_js_distance_is_zero_for_one_distribution_and_one_for_disjoint() -> None:
    assert js_distance([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-9)  # scale does not matter
    assert js_distance([5, 0], [0, 5]) == pytest.approx(1.0)
    assert 0 < js_distance([50, 50], [60, 40]) < 0.1
    with pytest.raises(ValueError, match="shapes"):
        js_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        js_distance([0, 0], [1, 2])


def test_psi_grows_with_the_shift_and_survives_empty_bins() -> None:
    ref = [100, 100, 100, 100]
    assert psi(ref, ref) == pytest.approx(0.0)
    assert psi(ref, [90, 110, 100, 100]) < psi(ref, [40, 160, 100, 100]) < psi(ref, [0, 200, 100, 100])
    assert np.isfinite(psi(ref, [0, 0, 0, 400]))


def test_drift_score_is_the_larger_of_classes_and_confidence() -> None:
    ref = {"class_counts": [50, 50, 0], "confidence_counts": [0] * 9 + [100]}
    same = drift_score(ref, [25, 25, 0], [0] * 9 + [50])
    assert same["drift"] == pytest.approx(0.0, abs=1e-9)
    unsure = drift_score(ref, [25, 25, 0], [0, 0, 0, 0, 50, 0, 0, 0, 0, 0])  # same classes, far less sure
    assert unsure["drift"] == pytest.approx(1.0) and unsure["js_classes"] == pytest.approx(0.0, abs=1e-9)


def test_temperature_scaling_fits_an_overconfident_model() -> None:
    """Logits of a model right 70% of the time but sure of itself: the least-NLL temperature is above 1, and the
    calibrated mean confidence then estimates the accuracy within a few points."""
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    y = rng.integers(0, c, n)
    right = rng.random(n) < 0.7
    predicted = np.where(right, y, (y + rng.integers(1, c, n)) % c)
    logits = rng.normal(0, 0.5, (n, c))
    logits[np.arange(n), predicted] += 6.0  # confident either way
    nll = [-np.log(softmax(logits, t)[np.arange(n), y]).sum() for t in TEMPERATURE_GRID]
    t = fit_temperature(TEMPERATURE_GRID, nll)
    assert t > 1.5
    confidence, entropy = confidence_and_entropy(logits, t)
    assert abs(confidence.mean() - right.mean()) < 0.03
    assert confidence_and_entropy(logits, 1.0)[0].mean() > 0.95  # uncalibrated: far off
    assert (entropy >= 0).all() and (entropy <= np.log(c) + 1e-9).all()


def _health(rows: int = 200, labels: int = 4, seed: int = 0, text: bool = False) -> VersionHealth:
    rng = np.random.default_rng(seed)
    h = VersionHealth("intent", 3, labels, temperature=1.0, size=100)
    for _ in range(rows):
        logits = rng.normal(0, 2, (1, labels))
        tokens = (np.array([12]), np.array([1]), np.array([False])) if text else None
        h.observe(logits, total_s=0.002, tokens=tokens)
    return h


def test_the_window_holds_the_latest_predictions_and_counters_run_on() -> None:
    h = _health(250, text=True)
    s = h.summary("sha")
    assert (s.predictions, s.requests, s.window) == (250, 250, 100)
    assert (
        sum(s.class_counts) == 100 and sum(s.confidence_counts) == 100 and len(s.confidence_counts) == CONFIDENCE_BINS
    )
    assert s.tokens == 1200 and s.unknown_tokens == 100 and s.truncated == 0 and sum(s.length_counts) == 100
    assert s.p99_latency_s == pytest.approx(0.002, rel=1e-3)
    check(s, 4)  # a real window's summary passes the coordinator's checks
    got = signals(s, {"class_counts": [25, 25, 25, 25], "confidence_counts": [0, 0, 0, 10, 20, 30, 20, 10, 5, 5]})
    assert 0.25 <= got["estimated_accuracy"] <= 1 and got["drift"] is not None
    assert got["unknown_token_share"] == pytest.approx(1 / 12)
    assert signals(s, None)["drift"] is None  # an older release without a reference: drift is not computed


def test_a_summary_is_due_only_after_enough_new_predictions() -> None:
    h = _health(40)
    assert not h.due(50)  # one summary never describes fewer than the minimum
    h = _health(120)
    assert h.due(50)
    h.sent(h.summary())
    assert not h.due(50)  # nor does the difference of two
    for _ in range(50):
        h.observe(np.zeros((1, 4)), 0.001)
    assert h.due(50)


def test_cached_answers_and_errors_are_counted_not_binned() -> None:
    h = _health(10)
    h.observe(None, 0.0001, rows=3)
    h.failed()
    s = h.summary()
    assert (s.predictions, s.requests, s.window, s.errors) == (13, 11, 10, 1)
    assert signals(s, None)["error_rate"] == pytest.approx(1 / 12)


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda s: s.class_counts.append(0), "class counts for a model of 4 labels"),
        (lambda s: s.confidence_counts.__setitem__(0, s.confidence_counts[0] + 1), "confidence counts add up"),
        (lambda s: setattr(s, "window", s.window + 1), "add up"),
        (lambda s: setattr(s, "predictions", 1 << 50), "a count above"),
        (lambda s: setattr(s, "confidence_sum", float("nan")), "confidence sum"),
        (lambda s: setattr(s, "confidence_sum", 1e9), "confidence sum"),
        (lambda s: setattr(s, "entropy_sum", -1.0), "entropy"),
        (lambda s: setattr(s, "p99_latency_s", 1e7), "p99 latency"),
        (lambda s: (setattr(s, "corrections", 1), setattr(s, "labelled", 2)), "labelled"),
        (lambda s: setattr(s, "requests", s.predictions + 1), "requests"),
    ],
)
def test_an_impossible_summary_is_refused_naming_what(change, says) -> None:
    s = _health(120).summary("sha")
    change(s)
    with pytest.raises(InvalidSummary, match=says):
        check(s, 4)
