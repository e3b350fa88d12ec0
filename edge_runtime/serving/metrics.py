"""Prometheus metrics of one edge server (own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fedge_edge_requests",
            "Inference requests by model, version and status",
            ["model", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fedge_edge_request_latency_seconds",
            "ModelInfer latency (server side)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "fedge_edge_queue_seconds",
            "Time a request waited for its batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "fedge_edge_batch_size",
            "Rows per backend call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.backend = Gauge(
            "fedge_edge_backend_info",
            "Backend serving each model version (value 1)",
            ["model", "version", "backend", "file"],
            registry=r,
        )
        self.installs = Counter("fedge_edge_installs", "Bundle installs by outcome", ["outcome"], registry=r)
        self.cache = Counter(
            "fedge_edge_cache_lookups",
            "Response cache lookups by model and result (hit, miss)",
            ["model", "result"],
            registry=r,
        )
        self.polls = Counter(
            "fedge_edge_release_polls",
            "Polls of the coordinator's release service by outcome"
            " (ok, unreachable, refused: this device was revoked, error)",
            ["outcome"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ... (Linux)

    def watch(self, repo, plane) -> None:
        """Gauges read at each scrape from the running server's data plane (see :class:`ServingState`)."""
        self.registry.register(ServingState(repo, plane))

    def on_batch(self, model: str):
        batch, queue = self.batch.labels(model), self.queue.labels(model)

        def record(rows: int, queued: list[float], compute_s: float) -> None:
            batch.observe(rows)
            for q in queued:
                queue.observe(q)

        return record


class ServingState:
    """What a fleet dashboard asks of a device, read when scraped: is it ready, which model versions serve, how
    many requests wait for a batch (Triton's nv_inference_pending_request_count) and how many are in flight."""

    def __init__(self, repo, plane) -> None:
        self.repo, self.plane = repo, plane

    def describe(self):
        return []  # nothing to check at registration: the values exist only at scrape time

    def collect(self):
        yield GaugeMetricFamily(
            "fedge_edge_server_ready", "1 while the server reports ready (ServerReady)", value=int(self.plane.ready())
        )
        yield GaugeMetricFamily(
            "fedge_edge_inflight_requests", "Inference requests being answered", value=self.plane.in_flight
        )
        ready = GaugeMetricFamily(
            "fedge_edge_model_ready",
            "1 for the version of each model that serves, 0 for installed versions that do not",
            labels=["model", "version"],
        )
        for row in self.repo.index():
            ready.add_metric([row["name"], row["version"]], int(row["state"] == "READY"))
        yield ready
        pending = GaugeMetricFamily(
            "fedge_edge_pending_requests", "Requests queued for a batch, not yet computing", labels=["model", "version"]
        )
        for m in self.repo.live():
            if m.batcher is not None:
                pending.add_metric([m.name, str(m.version)], m.batcher.pending())
        yield pending
        cache = self.plane.cache
        if cache is not None:
            yield GaugeMetricFamily("fedge_edge_cache_bytes", "Bytes the response cache holds", value=cache.bytes)
            yield GaugeMetricFamily(
                "fedge_edge_cache_capacity_bytes", "The response cache's size (--cache-config)", value=cache.capacity
            )
            yield GaugeMetricFamily("fedge_edge_cache_entries", "Answers in the response cache", value=len(cache))
            yield CounterMetricFamily(
                "fedge_edge_cache_evictions", "Answers dropped for room (least recently used)", value=cache.evictions
            )
