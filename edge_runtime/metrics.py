"""Prometheus metrics of one edge server (own registry, so several servers can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fedge_edge_requests", "Inference requests by model, version and status",
                                ["model", "version", "status"], registry=r)
        self.latency = Histogram("fedge_edge_request_latency_seconds", "ModelInfer latency (server side)", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("fedge_edge_queue_seconds", "Time a request waited for its batch", ["model"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("fedge_edge_batch_size", "Rows per backend call", ["model"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.backend = Gauge("fedge_edge_backend_info", "Backend serving each model version (value 1)",
                             ["model", "version", "backend", "file"], registry=r)
        self.installs = Counter("fedge_edge_installs", "Bundle installs by outcome", ["outcome"], registry=r)

    def on_batch(self, model: str):
        batch, queue = self.batch.labels(model), self.queue.labels(model)

        def record(rows: int, queued: list[float], compute_s: float) -> None:
            batch.observe(rows)
            for q in queued:
                queue.observe(q)

        return record
