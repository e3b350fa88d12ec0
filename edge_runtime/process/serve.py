"""``fedge edge serve``: the edge runtime process. A device's services (:mod:`.device`: release puller, repository
watch, Prometheus endpoint) around a serving worker (:mod:`.worker`: gRPC and KServe v2 REST on one event loop over
one data plane, the model repository with its sessions and batchers)."""

from __future__ import annotations

import logging
import os
import signal
import threading

from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.process.config import EdgeConfig
from fedge.edge_runtime.process.device import DeviceServices
from fedge.edge_runtime.process.limits import raise_open_files_limit
from fedge.edge_runtime.process.systemd import Notifier
from fedge.edge_runtime.process.worker import VERSION, ServingWorker
from fedge.edge_runtime.serving.backends import onnxruntime_conflict
from fedge.edge_runtime.serving.log_settings import FORMAT as LOG_FORMAT
from fedge.edge_runtime.serving.metrics import Metrics

log = logging.getLogger("fedge.edge")
__all__ = ["VERSION", "EdgeConfig", "EdgeServer", "serve"]


class EdgeServer:
    """One device's edge runtime in this process: the device's services around one serving worker."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.trust = TrustFile(cfg.trust)  # followed while serving: a rotated key needs no restart
        self.worker = ServingWorker(cfg, self.metrics, self.trust)
        self.device = DeviceServices(cfg, self.metrics, self.trust)
        self.repo, self.shm, self.logs, self.tracer, self.cache = (
            self.worker.repo,
            self.worker.shm,
            self.worker.logs,
            self.worker.tracer,
            self.worker.cache,
        )

    @property
    def port(self) -> int:
        return self.worker.port

    @property
    def http_port(self) -> int:
        return self.worker.http_port

    @property
    def plane(self):
        return self.worker.plane

    @property
    def _loop(self):  # the worker's event loop (tests hold it up to check the watchdog)
        return self.worker._loop

    def start(self) -> EdgeServer:
        creds = self.cfg.tls.credentials() if self.cfg.tls else None  # bad files fail here, before anything runs
        https = self.cfg.tls.ssl_context() if self.cfg.tls and self.cfg.http_port else None
        self.device.prepare(  # its TLS files too
            serving=lambda: {m.name: m.version for m in self.repo.live()}, health=self.worker.monitor
        )
        if conflict := onnxruntime_conflict():
            log.warning("%s", conflict)
        try:
            self.worker.start(creds, https)
            self.device.start([self.worker])
        except BaseException:
            self.stop()
            raise
        return self

    def responsive(self, timeout: float) -> bool:
        """Whether the worker's event loop runs a step within ``timeout`` seconds (the systemd watchdog's ask)."""
        return self.worker.responsive(timeout)

    def stop(self, grace: float | None = None) -> bool:
        """Stop gracefully, as Triton does: accept no new connections or requests and report not ready, answer
        every request already in flight (queued ones included) for at most ``grace`` seconds (default: the
        config's exit timeout), then close. Returns whether everything in flight was answered."""
        grace = self.cfg.exit_timeout_s if grace is None else grace
        self.device.stop_pulling()
        answered = self.worker.drain(grace)
        self.device.stop(grace)
        self.worker.close()
        return answered


def serve(cfg: EdgeConfig) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    server = EdgeServer(cfg)
    server.logs.install()
    server.logs.update(dict(cfg.log), announce=False)
    before, now = raise_open_files_limit()
    log.info("open files limit %d%s", now, f" (raised from {before})" if now != before else "")
    server.start()
    for row in server.repo.index():
        log.info("model %(name)s version %(version)s: %(state)s (%(reason)s)", row)
    live = [f"{m.name} v{m.version}" for m in server.repo.live()]
    systemd = Notifier()
    systemd.notify(
        "READY=1",
        f"STATUS=serving {len(live)} model(s){': ' + ', '.join(live) if live else ''}",
        f"MAINPID={os.getpid()}",
    )
    systemd.keep_alive(server.responsive)
    print(
        f"fedge edge runtime: gRPC (KServe v2) on {cfg.host}:{server.port}"
        + (f" ({cfg.tls.describe()})" if cfg.tls else "")
        + (f", HTTP (KServe v2 REST) on {cfg.host}:{server.http_port}" if server.http_port else "")
        + (
            f", metrics on :{cfg.metrics_port}/metrics" + (" (TLS)" if cfg.metrics_tls else "")
            if cfg.metrics_port
            else ""
        )
        + (f", pulling releases from {cfg.pull.address}" if cfg.pull else "")
        + (", client shared memory on (local clients)" if cfg.allow_client_shm else ""),
        flush=True,
    )
    done = threading.Event()

    def on_signal(signum, _frame) -> None:
        if done.is_set():  # a second signal while draining: go now
            log.warning("%s while stopping: exiting without waiting", signal.Signals(signum).name)
            os._exit(128 + signum)
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    done.wait()
    systemd.notify("STOPPING=1", "STATUS=stopping: answering the requests in flight")
    systemd.close()
    server.stop()
    return 0
