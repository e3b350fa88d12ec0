"""The health summary a device reports per served version (``fedge.release.v1.HealthSummary``, counts only), the
checks the coordinator holds every summary to before it keeps one, and the signals people read, computed from the
counts the same way on the device (``GET /v2/models/{name}/health``) and on the coordinator (``fedge fleet
health``): the coordinator recomputes drift from the histograms against the release's own reference rather than
take the device's word for it.

    >>> s = HealthSummary(model="intent", predictions=500, requests=500, window=500, class_counts=[...], ...)
    >>> check(s, labels=12)            # raises InvalidSummary naming what does not add up
    >>> signals(s, manifest.monitoring)["estimated_accuracy"]
    0.91
"""

from __future__ import annotations

import math
from typing import Any

from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.edge_runtime.monitoring.measures import CONFIDENCE_BINS, LENGTH_EDGES, drift_score, drifted
from fedge.proto.release_pb2 import HealthSummary

__all__ = ["HealthSummary", "InvalidSummary", "check", "signals"]
MAX_COUNT = 1 << 40  # no device answers a trillion predictions between two polls
MAX_LATENCY_S = 3600.0


class InvalidSummary(FedgeUserError, ValueError):
    """A summary whose counts cannot be: refused, whole."""


def check(s: HealthSummary, labels: int) -> None:
    """Raises InvalidSummary unless the summary's counts add up for a model of ``labels`` classes."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InvalidSummary(f"health summary of {s.model!r} (local version {s.local_version}): {what}")

    counts = [s.predictions, s.errors, s.requests, s.window, s.tokens, s.unknown_tokens, s.truncated]
    counts += [s.corrections, s.labelled, s.correct, *s.class_counts, *s.confidence_counts, *s.length_counts]
    need(all(c <= MAX_COUNT for c in counts), f"a count above {MAX_COUNT}")
    need(len(s.class_counts) == labels, f"{len(s.class_counts)} class counts for a model of {labels} labels")
    need(
        len(s.confidence_counts) == CONFIDENCE_BINS,
        f"{len(s.confidence_counts)} confidence bins, not {CONFIDENCE_BINS}",
    )
    need(sum(s.class_counts) == s.window, f"class counts add up to {sum(s.class_counts)}, not the window's {s.window}")
    need(
        sum(s.confidence_counts) == s.window, f"confidence counts add up to {sum(s.confidence_counts)}, not {s.window}"
    )
    need(s.window <= s.predictions, f"a window of {s.window} beyond the {s.predictions} predictions made")
    need(s.requests <= s.predictions, f"{s.requests} requests answered with fewer predictions ({s.predictions})")
    need(
        _within(s.confidence_sum, s.window / max(labels, 1), s.window),
        "a confidence sum outside [window/labels, window]",
    )
    need(_within(s.entropy_sum, 0.0, s.window * math.log(max(labels, 2)) + 1e-6), "an entropy sum outside its range")
    need(_within(s.p99_latency_s, 0.0, MAX_LATENCY_S), f"a p99 latency outside [0, {MAX_LATENCY_S:.0f}] s")
    need(s.correct <= s.labelled <= s.corrections, "more correct answers than labelled ones, or labelled than received")
    if s.length_counts:
        need(len(s.length_counts) == len(LENGTH_EDGES) + 1, f"{len(s.length_counts)} length bins")
        need(sum(s.length_counts) == s.window, "length counts that do not add up to the window")
    need(s.unknown_tokens <= s.tokens and s.truncated <= s.window, "more unknown tokens than tokens, or truncations")


def _within(x: float, lo: float, hi: float) -> bool:
    return math.isfinite(x) and lo - 1e-6 <= x <= hi + 1e-6


def signals(s: HealthSummary, reference: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers of a summary that people read (None where there is nothing to compute them from): estimated and
    production accuracy, drift against ``reference`` (the release's manifest ``monitoring`` section; None: an older
    release without one, so drift cannot be computed), error rate, p99 latency, entropy, text statistics."""
    window = s.window or None
    out: dict[str, Any] = {
        "predictions": s.predictions,
        "requests": s.requests,
        "errors": s.errors,
        "error_rate": s.errors / (s.requests + s.errors) if s.requests + s.errors else None,
        "window": s.window,
        "estimated_accuracy": s.confidence_sum / window if window else None,
        "mean_entropy": s.entropy_sum / window if window else None,
        "corrections": s.corrections,
        "labelled": s.labelled,
        "production_accuracy": s.correct / s.labelled if s.labelled else None,
        "p99_latency_s": s.p99_latency_s if window else None,
        "drift": None,
        "drift_detail": None,
        "drifted": False,
    }
    if s.length_counts:
        out |= {
            "unknown_token_share": s.unknown_tokens / s.tokens if s.tokens else 0.0,
            "truncation_rate": s.truncated / s.window if s.window else 0.0,
            "length_counts": list(s.length_counts),
        }
    usable = reference and len(reference.get("class_counts", ())) == len(s.class_counts)
    if window and usable:
        assert reference is not None
        detail = drift_score(reference, list(s.class_counts), list(s.confidence_counts))
        out["drift"], out["drift_detail"] = detail["drift"], detail
        out["drifted"] = drifted(detail)
    return out
