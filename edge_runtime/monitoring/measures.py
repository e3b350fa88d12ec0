"""The measures the loop is judged by, defined once for the device (its own signals), the coordinator (which
recomputes them from the counts it is sent) and the export (which makes the release's reference).

- **Calibrated confidence**: the top-1 probability of ``softmax(logits / T)``, with the temperature ``T`` fitted
  on the customers' holdouts during export (temperature scaling, Guo et al. 2017).
- **Estimated accuracy** without labels: the mean calibrated confidence over a window (NannyML's CBPE for a
  multiclass model: expected accuracy = mean top-class probability of a calibrated model).
- **Drift**: the Jensen-Shannon distance (base 2, so in [0, 1]) between a window's histogram and the release's
  reference histogram, for the predicted classes and for the calibrated confidence; the drift score is the larger
  of the two (a shift in what is asked, or in how sure the model is). The population stability index (PSI) of the
  same histograms is reported beside it, for those who know that one.
- **The alarm**: two samples of one distribution are never at distance 0, and small ones (a holdout of a few
  dozen rows, a window of 50 predictions over a dozen classes) are far apart by chance alone. So a window is
  flagged only when its drift exceeds both the operator's threshold and its **drift floor**: the 99.5th percentile
  of the drift score between two samples of the same distribution of these sizes, that distribution drawn from
  what the reference's counts say it could be (Monte Carlo, :func:`drift_floor`), which holds the false-alarm
  rate on unshifted traffic under 1% whatever the sizes (0.3% measured, docs/BENCHMARKS.md's loop part).

    >>> js_distance([50, 50], [50, 50])
    0.0
    >>> round(js_distance([100, 0], [0, 100]), 3)
    1.0
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE_BINS = 10  # top-1 calibrated confidence in [0, 1], in equal bins (the last one closed)
LENGTH_EDGES = (8, 16, 32, 64, 128, 256)  # tokens per text: <8, 8-15, ..., 128-255, >=256
DRIFT_THRESHOLD = 0.1  # the default alarm: Evidently's for Jensen-Shannon distance
PSI_SMOOTHING = 0.5  # pseudo-count per bin, so an empty bin does not make PSI infinite

Counts = Sequence[int] | np.ndarray


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) logits -> (N, C) probabilities of ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def confidence_and_entropy(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits -> the calibrated top-1 confidence (N,) and the entropy of the calibrated distribution (N,),
    in nats."""
    p = softmax(logits, temperature)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return p.max(axis=1), entropy


def confidence_bin(confidence: np.ndarray, bins: int = CONFIDENCE_BINS) -> np.ndarray:
    """Confidences in [0, 1] -> their bin, 0..bins-1."""
    return np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)


def length_bin(lengths: np.ndarray) -> np.ndarray:
    """Token counts -> their LENGTH_EDGES bin, 0..len(LENGTH_EDGES)."""
    return np.asarray(np.searchsorted(np.asarray(LENGTH_EDGES), np.asarray(lengths), side="right"))


def _distributions(a: Counts, b: Counts, smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(a, dtype=np.float64) + smoothing, np.asarray(b, dtype=np.float64) + smoothing
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms of different shapes: {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("an empty histogram has no distribution")
    return p / p.sum(), q / q.sum()


def js_distance(a: Counts, b: Counts) -> float:
    """The Jensen-Shannon distance (the square root of the divergence, base 2) between two histograms' distributions:
    0 for the same, 1 for disjoint ones."""
    p, q = _distributions(a, b)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def psi(reference: Counts, current: Counts) -> float:
    """The population stability index, sum((c - r) * ln(c / r)) over bins (0.1: a small shift, 0.25: a large one,
    by the usual reading), with PSI_SMOOTHING added to every bin."""
    r, c = _distributions(reference, current, PSI_SMOOTHING)
    return float(((c - r) * np.log(c / r)).sum())


def drift_score(reference: dict[str, Any], classes: Counts, confidences: Counts) -> dict[str, float]:
    """The drift of a window (its class and confidence histograms) against a release's reference (the manifest's
    ``monitoring`` section): ``{"drift": max JS distance, "floor": the drift chance alone reaches at these sizes,
    "js_classes", "js_confidence", "psi_classes", "psi_confidence"}``."""
    out = {
        "floor": drift_floor(reference, int(np.sum(classes))),
        "js_classes": js_distance(reference["class_counts"], classes),
        "js_confidence": js_distance(reference["confidence_counts"], confidences),
        "psi_classes": psi(reference["class_counts"], classes),
        "psi_confidence": psi(reference["confidence_counts"], confidences),
    }
    return {"drift": max(out["js_classes"], out["js_confidence"]), **out}


def drifted(detail: dict[str, float] | None, threshold: float = DRIFT_THRESHOLD) -> bool:
    """The alarm: drift above the operator's threshold and above chance's floor (see the module's notes)."""
    return detail is not None and detail["drift"] > max(threshold, detail["floor"])


def fit_temperature(grid: Sequence[float], nll: Sequence[float]) -> float:
    """The temperature of ``grid`` with the least summed negative log-likelihood on the holdouts (each customer
    sends its sums per grid point: statistics only)."""
    return float(grid[int(np.argmin(np.asarray(nll, dtype=np.float64)))])


def match_temperature(grid: Sequence[float], confidence_sum: Sequence[float], correct: int, examples: int) -> float:
    """The temperature of ``grid`` at which the holdouts' mean calibrated confidence is nearest their accuracy:
    the estimate's own target (CBPE estimates accuracy as that mean), where the least-NLL temperature of a small
    holdout can leave the mean points away from it."""
    gap = np.abs(np.asarray(confidence_sum, dtype=np.float64) / examples - correct / examples)
    return float(grid[int(np.argmin(gap))])


@functools.lru_cache(maxsize=256)
def _floor(classes: tuple[int, ...], confidences: tuple[int, ...], window: int, q: float, draws: int) -> float:
    rng = np.random.default_rng(0)
    n_ref = sum(classes)
    # the distribution itself is known only through the reference's counts: each draw takes one it could be
    # (Dirichlet with Jeffreys' prior, so a bin the reference never saw can still be hit), then two samples of it
    prior_c, prior_k = np.asarray(classes) + 0.5, np.asarray(confidences) + 0.5
    scores = []
    for _ in range(draws):
        pc, pk = rng.dirichlet(prior_c), rng.dirichlet(prior_k)
        ref_c, win_c = rng.multinomial(n_ref, pc), rng.multinomial(window, pc)
        ref_k, win_k = rng.multinomial(n_ref, pk), rng.multinomial(window, pk)
        scores.append(max(js_distance(ref_c, win_c), js_distance(ref_k, win_k)))
    return float(np.quantile(scores, q))


def drift_floor(reference: dict[str, Any], window: int, q: float = 0.995, draws: int = 400) -> float:
    """The ``q`` quantile of the drift score between a sample the reference's size and one of ``window``, both
    drawn from a distribution the reference's counts could come from: the drift that chance alone reaches (cached
    per reference and window size)."""
    classes = tuple(int(c) for c in reference["class_counts"])
    confidences = tuple(int(c) for c in reference["confidence_counts"])
    if window <= 0 or not sum(classes) or not sum(confidences):
        return 1.0
    return _floor(classes, confidences, int(window), q, draws)


TEMPERATURE_GRID = tuple(float(t) for t in np.round(np.geomspace(0.25, 8.0, 81), 4))  # steps of 4.4%
