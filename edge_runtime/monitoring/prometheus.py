"""The health signals as Prometheus metrics, read from the monitor at each scrape (nothing is counted twice):
``fedge_edge_health_*`` per model and version, the class and confidence shares of the window, the feedback store's
counts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fedge.edge_runtime.monitoring.measures import CONFIDENCE_BINS
from fedge.edge_runtime.monitoring.monitor import Monitor

GAUGES = {  # health key -> (metric, help)
    "estimated_accuracy": ("fedge_edge_health_estimated_accuracy", "Mean calibrated top-1 confidence in the window"),
    "drift": ("fedge_edge_health_drift", "Jensen-Shannon distance of the window from the release's reference"),
    "mean_entropy": ("fedge_edge_health_mean_entropy", "Mean entropy of the calibrated distribution, nats"),
    "production_accuracy": ("fedge_edge_health_production_accuracy", "Share of corrected answers that were right"),
    "window": ("fedge_edge_health_window_predictions", "Predictions the health signals describe"),
    "unknown_token_share": ("fedge_edge_health_unknown_token_share", "Share of tokens the tokenizer did not know"),
    "truncation_rate": ("fedge_edge_health_truncation_rate", "Share of texts cut at the tokenizer's max length"),
}
COUNTERS = {
    "predictions": ("fedge_edge_health_predictions", "Predictions answered by the version"),
    "corrections": ("fedge_edge_feedback_corrections", "Corrections received for the version's answers"),
}


class HealthCollector:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # the values exist only at scrape time

    def collect(self) -> Iterator[Metric]:
        versions: list[dict[str, Any]] = self.monitor.health()["versions"]
        labels = ["model", "version"]
        for key, (name, doc) in GAUGES.items():
            g = GaugeMetricFamily(name, doc, labels=labels)
            for v in versions:
                if v.get(key) is not None:
                    g.add_metric([v["model"], str(v["version"])], float(v[key]))
            yield g
        for key, (name, doc) in COUNTERS.items():
            c = CounterMetricFamily(name, doc, labels=labels)
            for v in versions:
                c.add_metric([v["model"], str(v["version"])], float(v[key]))
            yield c
        yield from self._shares()

    def _shares(self) -> Iterator[Metric]:
        classes = GaugeMetricFamily(
            "fedge_edge_health_class_share",
            "Share of the window predicted as each class",
            labels=["model", "version", "label"],
        )
        confidence = GaugeMetricFamily(
            "fedge_edge_health_confidence_share",
            f"Share of the window in each of {CONFIDENCE_BINS} calibrated-confidence bins (le: the bin's upper edge)",
            labels=["model", "version", "le"],
        )
        for h in self.monitor.versions():
            s = h.summary()
            if not s.window:
                continue
            names = self.monitor.labels(h.model, h.version)
            for i, n in enumerate(s.class_counts):
                classes.add_metric([h.model, str(h.version), names[i] if i < len(names) else str(i)], n / s.window)
            for i, n in enumerate(s.confidence_counts):
                confidence.add_metric([h.model, str(h.version), f"{(i + 1) / CONFIDENCE_BINS:.1f}"], n / s.window)
        yield classes
        yield confidence
