"""What a device runs once, whatever the number of serving workers: the release puller (it alone fetches and
verifies bundles), the watch over the model repository (a new version on disk is loaded by every worker), the
Prometheus endpoint and the systemd notifications (in :func:`fedge.edge_runtime.process.serve.serve`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fedge.edge_runtime.distribution.puller import HealthSource, ReleasePuller
from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.frontends.http_server import HttpServer, exposition
from fedge.edge_runtime.process.config import EdgeConfig
from fedge.edge_runtime.process.worker import ServingWorker
from fedge.edge_runtime.serving.metrics import Metrics

log = logging.getLogger("fedge.edge")


class DeviceServices:
    def __init__(self, cfg: EdgeConfig, metrics: Metrics, trust: TrustFile) -> None:
        self.cfg, self.metrics, self.trust = cfg, metrics, trust
        self.workers: list[ServingWorker] = []
        self._puller: ReleasePuller | None = None
        self._metrics_http: tuple[Any, ...] | None = None  # prometheus_client's (server, thread)
        self._metrics_https: HttpServer | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def prepare(self, serving: Callable[[], dict[str, int]], health: HealthSource | None = None) -> None:
        """Before anything serves: the puller is built, so bad TLS files for it fail now. ``serving()``: model ->
        the version the device serves now (what the coordinator is told at each poll); ``health``: the served
        versions' health summaries that polls carry."""
        if self.cfg.pull is not None:
            self._puller = ReleasePuller(
                self.cfg.pull, self.metrics, trusted=self.trust, serving=serving, health=health
            )

    def start(self, workers: Sequence[ServingWorker]) -> None:
        """Once the workers serve: watch the repository for them, open the metrics endpoint, start pulling."""
        self.workers = list(workers)
        self._watch()
        if self.cfg.metrics_port:
            self._start_metrics()
        if self._puller is not None:
            self._puller.start()

    def _watch(self, interval: float = 0.5) -> None:
        """A version installed on disk (by the puller or ``fedge edge install``) is loaded by every worker."""

        def loop() -> None:
            while not self._stop.wait(interval):
                for worker in self.workers:
                    try:
                        worker.repo.refresh()
                    except Exception:  # never let the watcher die
                        log.exception("repository refresh failed")

        self._watcher = threading.Thread(target=loop, name="fedge-repo-watch", daemon=True)
        self._watcher.start()

    def _start_metrics(self) -> None:
        """Plain HTTP: prometheus_client's own server. Over TLS (``--metrics-tls``): fedge's HTTP server on the
        first worker's loop, with the gRPC/HTTP certificate and client CA (a scraper then presents a certificate
        that CA signed: Prometheus' ``tls_config``). Not prometheus_client's TLS server: it completes each
        handshake inside its accept loop, so one client that connects and sends nothing holds the endpoint for
        every scraper."""
        if self.cfg.metrics_tls and self.cfg.tls is not None:
            self._metrics_https = HttpServer(exposition(self.metrics.registry), 1 << 16, self.cfg.tls.ssl_context())
            self.workers[0].call(self._metrics_https.start(self.cfg.host, self.cfg.metrics_port))
        else:
            from prometheus_client import start_http_server

            self._metrics_http = start_http_server(
                self.cfg.metrics_port, addr=self.cfg.host, registry=self.metrics.registry
            )

    def stop_pulling(self) -> None:
        if self._puller is not None:
            self._puller.stop()

    def stop(self, grace: float) -> None:
        """After the workers drained (metrics stay up meanwhile), before their loops stop."""
        self._stop.set()
        self.stop_pulling()
        if self._metrics_https is not None and self.workers:
            self.workers[0].call(self._metrics_https.stop(grace), grace + 10)
        if self._metrics_http is not None:
            self._metrics_http[0].shutdown()
