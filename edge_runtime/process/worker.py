"""What each serving process runs: its event loop (one thread), its model repository (sessions and batchers), the
data plane, the gRPC and REST front ends on that loop, the response cache, shared memory and tracing.

Nothing here is per device: the release puller, the metrics endpoint, systemd and the repository watch are
:mod:`fedge.edge_runtime.process.device`'s, so that several workers can share one device's services.

Why asyncio: with a thread per request, every request's handler thread must be woken to pick up its result and
fights the others for the GIL; measured side by side on 2 cores with a tiny model at 64 clients, that cost about
1.5x the server CPU per request of the event loop (docs/BENCHMARKS.md, the front-end table's note)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc

from fedge.edge_runtime.common.errors import AddressUnavailable
from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.frontends.feedback import FeedbackApi
from fedge.edge_runtime.frontends.grpc_servicer import (
    ErrorInterceptor,
    FeedbackServicer,
    HealthServicer,
    InferenceServicer,
)
from fedge.edge_runtime.frontends.http_server import HttpServer
from fedge.edge_runtime.frontends.rest import RestApi
from fedge.edge_runtime.monitoring.monitor import Monitor
from fedge.edge_runtime.monitoring.prometheus import HealthCollector
from fedge.edge_runtime.process.config import EdgeConfig
from fedge.edge_runtime.process.limits import QuietLoopErrors
from fedge.edge_runtime.serving.data_plane import DataPlane
from fedge.edge_runtime.serving.log_settings import LogSettings
from fedge.edge_runtime.serving.metrics import Metrics
from fedge.edge_runtime.serving.model import LoadedModel
from fedge.edge_runtime.serving.model_repository import ModelRepository
from fedge.edge_runtime.serving.observers import Observers
from fedge.edge_runtime.serving.response_cache import ResponseCache
from fedge.edge_runtime.serving.shared_memory import SharedMemory
from fedge.edge_runtime.serving.tracing import Tracer
from fedge.proto import feedback_pb2_grpc, health_pb2_grpc
from fedge.proto import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("fedge.edge")
VERSION = "0.1.0"
T = TypeVar("T")


class ServingWorker:
    def __init__(self, cfg: EdgeConfig, metrics: Metrics, trust: TrustFile) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.repo = ModelRepository(cfg.repo, trust, cfg.serving, on_batch=metrics.on_batch, on_load=self._on_load)
        self.port, self.http_port = cfg.port, 0
        self.plane: DataPlane | None = None
        self._server: grpc.aio.Server | None = None
        self._rest: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._executor = futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fedge-infer")
        self.shm = SharedMemory(cfg.allow_client_shm)
        self.logs = LogSettings()  # serve() hands it the process's log handlers
        self.tracer = Tracer(cfg.trace_file, cfg.trace)
        self.cache = ResponseCache(cfg.cache_bytes) if cfg.cache_bytes else None
        self.monitor = Monitor(cfg.monitor, self.repo) if cfg.monitor.enabled else None

    def _on_load(self, model: LoadedModel) -> None:
        if self.cache is not None:
            self.cache.drop_model(model.name)  # the old version's answers
        self.metrics.backend.labels(model.name, str(model.version), model.backend.name, model.backend.model_file).set(1)

    # -- starting ----------------------------------------------------------------------------------------------
    def start(self, creds: grpc.ServerCredentials | None, https: ssl.SSLContext | None) -> ServingWorker:
        """Load the installed models, then serve gRPC (and REST where configured) on this worker's loop."""
        self.repo.refresh()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(QuietLoopErrors())
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="fedge-grpc", daemon=True)
        self._loop_thread.start()
        self.plane = plane = self.call(self._data_plane())
        self._server, self.port = self.call(self._start_grpc(plane, creds))
        self.metrics.watch(self.repo, plane)
        if self.monitor is not None:
            self.metrics.registry.register(HealthCollector(self.monitor))
        if self.cfg.http_port:
            rest = RestApi(plane, self.monitor)
            self._rest = HttpServer(rest, self.cfg.max_message_bytes, https, self.cfg.http, rest.inflated_limit)
            try:
                self.http_port = self.call(self._rest.start(self.cfg.host, self.cfg.http_port))
            except OSError as exc:
                raise AddressUnavailable(
                    f"cannot serve HTTP on {self.cfg.host}:{self.cfg.http_port}: {exc.strerror}"
                ) from exc
        return self

    async def _data_plane(self) -> DataPlane:
        """Made on the worker's loop (its events belong there)."""
        monitor = self.monitor
        return DataPlane(
            self.repo,
            self.metrics,
            VERSION,
            self._executor,
            self.shm,
            self.logs,
            self.tracer,
            self.cfg.strict_readiness,
            self.cache,
            Observers([monitor.observe] if monitor is not None else []),
            request_ids=monitor.new_request_id if monitor is not None and monitor.capturing else None,
            on_failure=monitor.failed if monitor is not None else None,
        )

    async def _start_grpc(self, plane: DataPlane, creds: grpc.ServerCredentials | None) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", self.cfg.max_message_bytes),
                ("grpc.max_send_message_length", self.cfg.max_message_bytes),
                # gRPC sets SO_REUSEPORT by default: a second server on a taken port would silently share
                # it (each getting some of the connections) instead of failing to start
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(  # type: ignore[no-untyped-call]
            HealthServicer(self.repo, plane.ready, lambda: plane.stopping), server
        )
        feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(  # type: ignore[no-untyped-call]
            FeedbackServicer(FeedbackApi(plane, self.monitor)), server
        )
        try:
            address = f"{self.cfg.host}:{self.cfg.port}"
            port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        except RuntimeError as exc:  # gRPC says only "Failed to bind"
            raise AddressUnavailable(
                f"cannot serve gRPC on {self.cfg.host}:{self.cfg.port}: the address is in use or not available here"
            ) from exc
        await server.start()
        return server, port

    # -- while serving -----------------------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the worker's event loop and wait (at most ``timeout`` s) for its result."""
        assert self._loop is not None, "the worker is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def responsive(self, timeout: float) -> bool:
        """Whether the worker's event loop (every gRPC and HTTP request goes through it) runs a step within
        ``timeout`` seconds: what the systemd watchdog asks."""
        assert self._loop is not None, "the worker is not started"
        step = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop)
        try:
            step.result(timeout)
            return True
        except futures.TimeoutError:  # not the builtin TimeoutError before Python 3.11 (JetPack 6 runs 3.10)
            step.cancel()
            return False

    # -- stopping ----------------------------------------------------------------------------------------------
    def drain(self, grace: float) -> bool:
        """Accept no new connections or requests and report not ready, answer every request already in flight
        (queued ones included) for at most ``grace`` seconds -> whether everything in flight was answered."""
        if self._server is None:
            return True
        return self.call(self._drain(grace), grace + 10)

    async def _drain(self, grace: float) -> bool:
        started = time.monotonic()
        plane = self.plane
        assert plane is not None and self._server is not None
        log.info(
            "stopping: no new requests; waiting up to %.0f s for %d inference(s) in flight", grace, plane.in_flight
        )
        plane.stop()
        closing = asyncio.gather(self._server.stop(grace), *(s.stop(grace) for s in (self._rest,) if s is not None))
        answered = await plane.quiet(grace)
        left = plane.in_flight  # cut off by the closing below
        await closing
        if answered:
            log.info("stopped: every request in flight was answered (%.2f s)", time.monotonic() - started)
        else:
            log.warning(
                "stopped: the exit timeout of %.0f s passed with %d inference(s) in flight; they were cancelled",
                grace,
                left,
            )
        return answered

    def close(self) -> None:
        """After :meth:`drain`: stop the loop and release the models, shared memory and trace file."""
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        if self.plane is not None:
            self.plane.observers.close()
        if self.monitor is not None:
            self.monitor.close()
        self.shm.close()
        self.tracer.close()
        self._executor.shutdown(wait=False)
        self.repo.close()
