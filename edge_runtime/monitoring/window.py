"""One served version's health on the device: cumulative counters since it began serving, and a sliding window of
its latest predictions (class, calibrated confidence, entropy, text statistics) and request latencies, kept as
fixed-size rings of numbers (never the inputs). Histograms are counted when asked (a scrape, a poll), not per
request.

    >>> h = VersionHealth("intent", 2, labels=12, temperature=1.3, size=1000)
    >>> h.observe(logits, total_s=0.004)
    >>> h.summary("sha...").window
    1
"""

from __future__ import annotations

import threading

import numpy as np

from fedge.edge_runtime.monitoring.measures import (
    CONFIDENCE_BINS,
    LENGTH_EDGES,
    confidence_and_entropy,
    confidence_bin,
    length_bin,
)
from fedge.edge_runtime.monitoring.summary import HealthSummary


class Ring:
    """The last ``size`` values written, of one dtype."""

    def __init__(self, size: int, dtype: type) -> None:
        self.values: np.ndarray = np.zeros(size, dtype=dtype)
        self.written = 0

    def extend(self, values: np.ndarray) -> None:
        size = len(self.values)
        values = np.asarray(values)[-size:]
        idx = (self.written + np.arange(len(values))) % size
        self.values[idx] = values
        self.written += len(values)

    def view(self) -> np.ndarray:
        return self.values[: min(self.written, len(self.values))]


class VersionHealth:
    def __init__(self, model: str, version: int, labels: int, temperature: float = 1.0, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"the health window must hold >= 1 prediction, got {size}")
        self.model, self.version, self.labels, self.temperature = model, version, labels, temperature
        self._lock = threading.Lock()
        self.classes, self.confidence = Ring(size, np.int32), Ring(size, np.float32)
        self.entropy, self.latency = Ring(size, np.float32), Ring(size, np.float32)
        self.lengths, self.unknown, self.truncated = Ring(size, np.int32), Ring(size, np.int32), Ring(size, np.bool_)
        self.text = False
        self.predictions = self.requests = self.errors = 0
        self.corrections = self.labelled = self.correct = 0
        self.reported_at = 0  # predictions when the last summary was sent (see :meth:`due`)

    def observe(
        self,
        logits: np.ndarray | None,
        total_s: float | np.ndarray,
        rows: int = 0,
        tokens: tuple[np.ndarray, ...] | None = None,
    ) -> None:
        """Answered requests: their (N, C) logits, all rows together (None: only answers from the response cache,
        counted, not binned), their latencies (one per request), ``rows`` answered from the cache among them, and
        for a text model ``(lengths, unknown, truncated)`` per row of ``logits``."""
        latencies = np.atleast_1d(np.asarray(total_s, dtype=np.float32))
        with self._lock:
            self.requests += len(latencies)
            self.latency.extend(latencies)
            self.predictions += rows
            if logits is None:
                return
            logits = logits.reshape(len(logits), -1)
            confidence, entropy = confidence_and_entropy(logits, self.temperature)
            self.predictions += len(logits)
            self.classes.extend(logits.argmax(axis=1))
            self.confidence.extend(confidence)
            self.entropy.extend(entropy)
            if tokens is not None:
                self.text = True
                for ring, values in zip((self.lengths, self.unknown, self.truncated), tokens):
                    ring.extend(values)

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    def feedback(self, matched: bool, correct: bool) -> None:
        with self._lock:
            self.corrections += 1
            self.labelled += matched
            self.correct += matched and correct

    def due(self, min_predictions: int) -> bool:
        """Whether a summary may be sent: at least ``min_predictions`` since the last one sent, and in the window
        (so that no summary, and no difference of two, describes fewer)."""
        return self.predictions - self.reported_at >= min_predictions and len(self.classes.view()) >= min_predictions

    def summary(self, manifest_sha256: str = "") -> HealthSummary:
        with self._lock:
            classes, confidence = self.classes.view(), self.confidence.view()
            s = HealthSummary(
                model=self.model,
                manifest_sha256=manifest_sha256,
                local_version=self.version,
                predictions=self.predictions,
                errors=self.errors,
                requests=self.requests,
                window=len(classes),
                class_counts=np.bincount(classes, minlength=self.labels)[: self.labels].tolist(),
                confidence_counts=np.bincount(confidence_bin(confidence, CONFIDENCE_BINS), minlength=CONFIDENCE_BINS)
                .astype(int)
                .tolist(),
                confidence_sum=float(confidence.astype(np.float64).sum()),
                entropy_sum=float(self.entropy.view().astype(np.float64).sum()),
                corrections=self.corrections,
                labelled=self.labelled,
                correct=self.correct,
                p99_latency_s=float(np.quantile(self.latency.view(), 0.99)) if self.latency.written else 0.0,
            )
            if self.text:
                s.length_counts.extend(
                    np.bincount(length_bin(self.lengths.view()), minlength=len(LENGTH_EDGES) + 1).tolist()
                )
                s.tokens = int(self.lengths.view().sum())
                s.unknown_tokens = int(self.unknown.view().sum())
                s.truncated = int(self.truncated.view().sum())
            return s

    def sent(self, summary: HealthSummary) -> None:
        self.reported_at = summary.predictions
