"""``fedge edge serve``: the edge runtime process. One gRPC server (Open Inference Protocol + grpc.health.v1,
grpc.aio on an event loop of its own thread), the KServe v2 REST endpoint on the same loop over the same
data plane, one Prometheus endpoint, a repository watcher that hot-swaps
verified new versions, and optionally a puller that fetches signed releases from the coordinator.

Why asyncio: with a thread per request, every request's handler thread must be woken to pick up its result and
fights the others for the GIL; measured side by side on 2 cores with a tiny model at 64 clients, that cost about
1.5x the server CPU per request of the event loop (docs/BENCHMARKS.md, the front-end table's note)."""
from __future__ import annotations

from fedge.edge_runtime.common.errors import ConfigError
import asyncio
import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from fedge.proto import health_pb2_grpc

from fedge.edge_runtime.serving.backends import onnxruntime_conflict
from fedge.edge_runtime.distribution.puller import PullConfig, ReleasePuller
from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.common.errors import AddressUnavailable
from fedge.edge_runtime.frontends.http_server import HttpLimits, HttpServer, exposition
from fedge.edge_runtime.serving.metrics import Metrics
from fedge.edge_runtime.serving.model_repository import ModelRepository, ServingConfig
from fedge.edge_runtime.serving.response_cache import ResponseCache
from fedge.edge_runtime.frontends.rest import RestApi
from fedge.edge_runtime.serving.data_plane import DataPlane
from fedge.edge_runtime.frontends.grpc_servicer import ErrorInterceptor, HealthServicer, InferenceServicer
from fedge.edge_runtime.serving.log_settings import FORMAT as LOG_FORMAT
from fedge.edge_runtime.serving.log_settings import LogSettings
from fedge.edge_runtime.serving.shared_memory import SharedMemory
from fedge.edge_runtime.process.limits import QuietLoopErrors, raise_open_files_limit
from fedge.edge_runtime.process.systemd import Notifier
from fedge.edge_runtime.common.tls import ServerTLS
from fedge.edge_runtime.serving.tracing import Tracer, TraceSettings

log = logging.getLogger("fedge.edge")
VERSION = "0.1.0"


@dataclass(frozen=True)
class EdgeConfig:
    repo: Path
    trust: Path                            # the pinned Ed25519 public key of the release signer
    host: str = "0.0.0.0"
    port: int = 8001
    metrics_port: int = 8002               # 0: no metrics endpoint
    http_port: int = 8000                  # KServe v2 REST (Triton's HTTP port); 0: no HTTP endpoint
    serving: ServingConfig = field(default_factory=ServingConfig)
    max_message_bytes: int = 64 << 20      # larger requests get RESOURCE_EXHAUSTED (Triton's default)
    http: HttpLimits = field(default_factory=HttpLimits)  # timeouts and connection limit of the REST endpoint
    workers: int = 8                       # threads for unbatched inference and model loading
    pull: PullConfig | None = None         # follow the coordinator's release service; None = air-gapped
    allow_client_shm: bool = False         # Triton's system shared memory, for clients on this host only
    tls: ServerTLS | None = None           # gRPC and HTTP; None: plaintext (Triton's default)
    metrics_tls: bool = False              # the metrics endpoint too, with ``tls``'s certificate and client CA
    trace_file: Path | None = None         # Triton's --trace-config triton,file=...; None: no tracing
    trace: TraceSettings = field(default_factory=TraceSettings)
    strict_readiness: bool = True          # Triton's default: not ready while a model that should serve does not
    exit_timeout_s: float = 30.0           # Triton's --exit-timeout-secs: how long stopping waits for requests
    cache_bytes: int = 0                   # Triton's --cache-config local,size=N: the response cache; 0: none
    log: tuple[tuple[str, bool | int | str], ...] = ()  # log settings to start with (Triton's --log-* flags)

    def __post_init__(self) -> None:
        if not all(0 <= p < 65536 for p in (self.port, self.metrics_port, self.http_port)):
            raise ConfigError("ports must be in [0, 65535]")
        if self.exit_timeout_s < 0:
            raise ConfigError("the exit timeout must be >= 0 seconds")
        if self.metrics_tls and (self.tls is None or not self.metrics_port):
            raise ConfigError("--metrics-tls serves the metrics endpoint with the server's certificate: it needs"
                             " --tls-cert and --tls-key, and a --metrics-port")


class EdgeServer:
    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.trust = TrustFile(cfg.trust)  # followed while serving: a rotated key needs no restart
        self.repo = ModelRepository(cfg.repo, self.trust, cfg.serving,
                                    on_batch=self.metrics.on_batch, on_load=self._on_load)
        self.port = cfg.port
        self._server: grpc.aio.Server | None = None
        self.plane: DataPlane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._executor = futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fedge-infer")
        self._metrics_http = None
        self._metrics_https: HttpServer | None = None
        self._rest: HttpServer | None = None
        self.http_port = 0
        self._puller = None
        self.shm = SharedMemory(cfg.allow_client_shm)
        self.logs = LogSettings()  # serve() hands it the process's log handlers
        self.tracer = Tracer(cfg.trace_file, cfg.trace)
        self.cache = ResponseCache(cfg.cache_bytes) if cfg.cache_bytes else None

    def _on_load(self, model) -> None:
        if self.cache is not None:
            self.cache.drop_model(model.name)  # the old version's answers
        self.metrics.backend.labels(model.name, str(model.version), model.backend.name, model.backend.model_file).set(1)

    def start(self) -> "EdgeServer":
        creds = self.cfg.tls.credentials() if self.cfg.tls else None  # bad files fail here, before anything runs
        https = self.cfg.tls.ssl_context() if self.cfg.tls and self.cfg.http_port else None
        if self.cfg.pull is not None:  # its TLS files are checked here too
            puller = ReleasePuller(self.cfg.pull, self.metrics, trusted=self.trust,
                                   serving=lambda: {m.name: m.version for m in self.repo.live()})
        if conflict := onnxruntime_conflict():
            log.warning("%s", conflict)
        self.repo.refresh()
        self.repo.watch()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(QuietLoopErrors())
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="fedge-grpc", daemon=True)
        self._loop_thread.start()
        self.plane = self._call(self._data_plane())
        self._server, self.port = self._call(self._start_grpc(self.plane, creds))
        self.metrics.watch(self.repo, self.plane)
        if self.cfg.http_port:
            rest = RestApi(self.plane)
            self._rest = HttpServer(rest, self.cfg.max_message_bytes, https, self.cfg.http, rest.inflated_limit)
            try:
                self.http_port = self._call(self._rest.start(self.cfg.host, self.cfg.http_port))
            except OSError as exc:
                self.stop()
                raise AddressUnavailable(f"cannot serve HTTP on {self.cfg.host}:{self.cfg.http_port}: {exc.strerror}"
                                         ) from exc
        if self.cfg.metrics_port:
            try:
                self._start_metrics()
            except OSError as exc:
                self.stop()
                raise AddressUnavailable(f"cannot serve metrics on {self.cfg.host}:{self.cfg.metrics_port}: {exc.strerror}") from exc
        if self.cfg.pull:
            self._puller = puller
            self._puller.start()
        return self

    def _start_metrics(self) -> None:
        """Plain HTTP: prometheus_client's own server. Over TLS (``--metrics-tls``): fedge's HTTP server on the
        server's loop, with the gRPC/HTTP certificate and client CA (a scraper then presents a certificate that CA
        signed: Prometheus' ``tls_config``). Not prometheus_client's TLS server: it completes each handshake inside
        its accept loop, so one client that connects and sends nothing holds the endpoint for every scraper."""
        if self.cfg.metrics_tls and self.cfg.tls is not None:
            self._metrics_https = HttpServer(exposition(self.metrics.registry), 1 << 16, self.cfg.tls.ssl_context())
            self._call(self._metrics_https.start(self.cfg.host, self.cfg.metrics_port))
        else:
            from prometheus_client import start_http_server

            self._metrics_http = start_http_server(self.cfg.metrics_port, addr=self.cfg.host,
                                                   registry=self.metrics.registry)

    def responsive(self, timeout: float) -> bool:
        """Whether the server's event loop (every gRPC and HTTP request goes through it) runs a step within
        ``timeout`` seconds: what the systemd watchdog asks."""
        step = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop)
        try:
            step.result(timeout)
            return True
        except futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11 (JetPack 6 runs 3.10)
            step.cancel()
            return False

    def _call(self, coro, timeout: float | None = None):
        """Run ``coro`` on the server's event loop and wait (at most ``timeout`` s) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _data_plane(self) -> DataPlane:
        """Made on the server's loop (its events belong there)."""
        return DataPlane(self.repo, self.metrics, VERSION, self._executor, self.shm, self.logs, self.tracer,
                         self.cfg.strict_readiness, self.cache)

    async def _start_grpc(self, plane: DataPlane, creds: grpc.ServerCredentials | None
                          ) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[("grpc.max_receive_message_length", self.cfg.max_message_bytes),
                     ("grpc.max_send_message_length", self.cfg.max_message_bytes),
                     # gRPC sets SO_REUSEPORT by default: a second server on a taken port would silently share
                     # it (each getting some of the connections) instead of failing to start
                     ("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(self.repo, plane.ready, lambda: plane.stopping),
                                                     server)
        try:
            address = f"{self.cfg.host}:{self.cfg.port}"
            port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        except RuntimeError as exc:  # gRPC says only "Failed to bind"
            raise AddressUnavailable(f"cannot serve gRPC on {self.cfg.host}:{self.cfg.port}: the address is in use"
                                     " or not available here") from exc
        await server.start()
        return server, port

    def stop(self, grace: float | None = None) -> bool:
        """Stop gracefully, as Triton does: accept no new connections or requests and report not ready, answer
        every request already in flight (queued ones included) for at most ``grace`` seconds (default: the
        config's exit timeout), then close. Returns whether everything in flight was answered."""
        grace = self.cfg.exit_timeout_s if grace is None else grace
        if self._puller is not None:
            self._puller.stop()
        answered = True
        if self._server is not None:
            answered = self._call(self._drain(grace), grace + 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        self.shm.close()
        self.tracer.close()
        self._executor.shutdown(wait=False)
        if self._metrics_http is not None and isinstance(self._metrics_http, tuple):
            self._metrics_http[0].shutdown()
        self.repo.close()
        return answered

    async def _drain(self, grace: float) -> bool:
        started = time.monotonic()
        plane = self.plane
        log.info("stopping: no new requests; waiting up to %.0f s for %d inference(s) in flight", grace,
                 plane.in_flight)
        plane.stop()
        closing = asyncio.gather(self._server.stop(grace), *(s.stop(grace) for s in (self._rest, self._metrics_https)
                                                             if s is not None))
        answered = await plane.quiet(grace)
        left = plane.in_flight  # cut off by the closing below
        await closing
        if answered:
            log.info("stopped: every request in flight was answered (%.2f s)", time.monotonic() - started)
        else:
            log.warning("stopped: the exit timeout of %.0f s passed with %d inference(s) in flight; they were"
                        " cancelled", grace, left)
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
    systemd.notify("READY=1", f"STATUS=serving {len(live)} model(s){': ' + ', '.join(live) if live else ''}",
                   f"MAINPID={os.getpid()}")
    systemd.keep_alive(server.responsive)
    print(f"fedge edge runtime: gRPC (KServe v2) on {cfg.host}:{server.port}"
          + (f" ({cfg.tls.describe()})" if cfg.tls else "")
          + (f", HTTP (KServe v2 REST) on {cfg.host}:{server.http_port}" if server.http_port else "")
          + (f", metrics on :{cfg.metrics_port}/metrics" + (" (TLS)" if cfg.metrics_tls else "") if cfg.metrics_port
             else "")
          + (f", pulling releases from {cfg.pull.address}" if cfg.pull else "")
          + (", client shared memory on (local clients)" if cfg.allow_client_shm else ""), flush=True)
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
