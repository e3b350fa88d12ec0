"""The edge's data plane: everything a request asks of the server, whichever protocol it came by. Inference
(decode and check the inputs, the response cache, the model's batcher or a thread, classification, shared-memory
outputs, tracing, statistics and metrics), readiness and draining, metadata, the model repository, shared-memory
regions, trace and log settings. The front ends (fedge.edge_runtime.frontends: gRPC, gRPC streaming, REST) only
translate their framing to and from these calls, and answer errors through the one table in
fedge.edge_runtime.common.errors. Failed inferences are counted here, once, whichever front end saw them.

Runs on the server's event loop: nothing here blocks it for long (batched inference waits for its batch on the
loop, unbatched inference and model loading run on ``executor``'s threads)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np

from fedge.edge_runtime.common.errors import (
    EdgeError,
    InvalidInput,
    ModelNotFound,
    RegionNotFound,
    Unsupported,
    quoted,
    status_of,
)
from fedge.edge_runtime.distribution.repository import check_model_name, valid_model_name, versions
from fedge.edge_runtime.serving import describe
from fedge.edge_runtime.serving.inference import (
    InferRequest,
    InferResult,
    Wanted,
    classify,
    decode_inputs,
    request_priority,
    request_timeout_us,
    requested_outputs,
)
from fedge.edge_runtime.serving.log_settings import LogSettings
from fedge.edge_runtime.serving.metrics import Metrics
from fedge.edge_runtime.serving.model import LoadedModel
from fedge.edge_runtime.serving.model_repository import ModelRepository
from fedge.edge_runtime.serving.observers import Answered, Observers
from fedge.edge_runtime.serving.response_cache import ResponseCache, request_key
from fedge.edge_runtime.serving.shared_memory import SharedMemory, ShmRef
from fedge.edge_runtime.serving.tracing import Tracer

SERVER_NAME = "fedge-edge"
EXTENSIONS = [
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
    "logging",
    "trace",
    "binary_tensor_data",
]  # the last: Triton's binary tensors over HTTP (frontends.rest_codec)
Encoded = TypeVar("Encoded")
OTHER = "(other)"  # the metric label of a model name or version that is not installed


class DataPlane:
    def __init__(
        self,
        repo: ModelRepository,
        metrics: Metrics,
        version: str,
        executor: Executor,
        shm: SharedMemory | None = None,
        logs: LogSettings | None = None,
        tracer: Tracer | None = None,
        strict_readiness: bool = True,
        cache: ResponseCache | None = None,
        observers: Observers | None = None,
        request_ids: Callable[[], str] | None = None,
        on_failure: Callable[[str, int], None] | None = None,
    ) -> None:
        self.repo, self.metrics, self.version = repo, metrics, version
        self.observers = observers if observers is not None else Observers()  # each answer, off the hot path
        self.request_ids = request_ids  # makes an id for a request that came without one (feedback capture)
        self.on_failure = on_failure  # (model, version) of a request that failed on the server's side
        self.cache = cache  # --cache-config: answers of repeated requests, for models whose config allows it
        self.strict_readiness = strict_readiness
        self.executor = executor  # threads for unbatched inference and model loading
        self.shm = shm or SharedMemory(allowed=False)
        self.logs = logs or LogSettings()
        self.tracer = tracer or Tracer()
        self.extensions = EXTENSIONS + (["system_shared_memory"] if self.shm.allowed else [])
        self.stopping = False  # set by stop(): not ready, streams read no further requests
        self.in_flight = 0  # inferences begun and not yet answered (any protocol)
        self._quiet = asyncio.Event()  # set once stopping and nothing is in flight
        self._on_stop: list[Callable[[], None]] = []

    # -- readiness and draining ------------------------------------------------------------------------------
    def ready(self) -> bool:
        """Triton's strict readiness (its default): ready once every model that should serve does; never while
        stopping."""
        return not self.stopping and (not self.strict_readiness or not self.repo.unready())

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model serves; a name that is no model name at all is InvalidInput, as on every path."""
        try:
            self.repo.get(name, version)
        except InvalidInput:
            raise
        except EdgeError:
            return False
        return True

    def on_stop(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs when the server starts stopping (an open stream stops reading, say)."""
        self._on_stop.append(callback)

    def stop(self) -> None:
        """The server is stopping (on the loop): report not ready and tell whoever asked (:meth:`on_stop`).
        Inferences in flight go on; the caller waits for them with :meth:`quiet`."""
        self.stopping = True
        for callback in self._on_stop:
            callback()
        if not self.in_flight:
            self._quiet.set()

    async def quiet(self, timeout: float) -> bool:
        """Whether every inference in flight was answered within ``timeout`` s of :meth:`stop`."""
        if self._quiet.is_set():
            return True
        try:
            await asyncio.wait_for(self._quiet.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # -- metadata ----------------------------------------------------------------------------------------------
    def model_metadata(self, name: str, version: str = ""):
        return describe.metadata(self.repo.get(name, version))

    def model_config(self, name: str, version: str = ""):
        return describe.config(self.repo.get(name, version))

    def statistics(self, name: str = "", version: str = "") -> list:
        models = [self.repo.get(name, version)] if name else self.repo.live()
        return [m.stats.to_proto(m.name, str(m.version)) for m in models]

    # -- inference ---------------------------------------------------------------------------------------------
    async def infer(
        self,
        model: str,
        version: str,
        decode: Callable[[], InferRequest | Awaitable[InferRequest]],
        encode: Callable[[InferResult], Encoded],
        peer: str,
    ) -> Encoded:
        """One inference, whichever way it came: ``decode()`` the front end's request, run it, ``encode`` the
        result for the front end. A failure anywhere in that is counted here, by its status, and raised."""
        self.in_flight += 1
        try:
            return encode(await self._infer(model, version, decode, peer))
        except BaseException as exc:
            self.metrics.requests.labels(*self._labels(model, version), status_of(exc)[0]).inc()
            raise
        finally:
            self.in_flight -= 1
            if self.stopping and not self.in_flight:
                self._quiet.set()

    async def _infer(self, model: str, version: str, decode: Callable, peer: str) -> InferResult:
        started = time.perf_counter()
        m = self.repo.get(model, version)
        try:
            request = decode()
            if inspect.isawaitable(request):  # a front end that parses off the loop
                request = await request
        except BaseException as exc:
            self._failed(m, exc, time.perf_counter() - started)
            raise
        if not request.id and self.request_ids is not None:
            request.id = self.request_ids()  # returned in the response: a correction can name it
        shm = self.shm.client(peer)
        trace = self.tracer.sample(m.name, m.version, request.id) if self.tracer.active else None
        if trace is not None:
            trace.mark("REQUEST_START", started)
        try:
            wanted = requested_outputs(request.outputs, m.outputs)
            to_shm = {name: w.shm for name, w in wanted.items() if w.shm is not None}
            for name, ref in to_shm.items():  # a bad output region fails the request before it runs
                shm.check(ref, f"output {name!r}")
            inputs = decode_inputs(request.inputs, m.inputs, m.max_batch_size, shm)
            key = self._cache_key(m, inputs, wanted, to_shm)
            cache = self.cache  # not None where there is a key
            if key is not None and cache is not None:
                looked = time.perf_counter()
                hit = cache.get(key)
                lookup_s = time.perf_counter() - looked
                if hit is not None:
                    self._answered(m, time.perf_counter() - started, cache_s=lookup_s)
                    if self.observers:
                        self.observers.notify(
                            Answered(
                                m.name, m.version, request.id, hit, inputs, time.perf_counter() - started, cached=True
                            )
                        )
                    return InferResult(m.name, str(m.version), request.id, hit)
            feeds = m.preprocess(inputs)
            decoded = time.perf_counter()
            if trace is not None:
                trace.mark("QUEUE_START", decoded)
            outputs = await m.run_async(
                feeds,
                self.executor,
                trace,
                request_timeout_us(request.parameters),
                request_priority(request.parameters),
            )
            ran = time.perf_counter()
            raw = outputs = m.postprocess(outputs)
            outputs = {
                name: classify(outputs[name], w.class_count, m.manifest.labels) if w.class_count else outputs[name]
                for name, w in wanted.items()
            }
            result = InferResult(m.name, str(m.version), request.id, outputs, shm.write_outputs(outputs, to_shm))
            if key is not None and cache is not None:
                stored = time.perf_counter()
                cache.put(key, m.name, outputs)
                m.stats.cache_miss(lookup_s + time.perf_counter() - stored)
                self.metrics.cache.labels(m.name, "miss").inc()
        except BaseException as exc:
            self._failed(m, exc, time.perf_counter() - started)
            raise
        finally:
            if trace is not None:
                trace.mark("REQUEST_END", time.perf_counter())
                self.tracer.finish(trace)
        done = time.perf_counter()
        self._answered(m, done - started, decoded - started, done - ran)
        if self.observers:
            self.observers.notify(
                Answered(m.name, m.version, request.id, raw, inputs, done - started, ran - decoded, features=feeds)
            )
        return result

    def _failed(self, m: LoadedModel, exc: BaseException, total_s: float) -> None:
        m.stats.request(False, total_s)
        if self.on_failure is not None and status_of(exc)[1] >= 500:
            self.on_failure(m.name, m.version)

    def _labels(self, model: str, version: str) -> tuple[str, str]:
        """The metric labels of a failed request: a model name or version that is not installed is counted under
        OTHER, so that a client sending made-up names cannot grow the metrics (one series per name) without bound."""
        if not valid_model_name(model) or model not in self.repo.names():
            return OTHER, ""
        if version and not (
            version.isdigit() and len(version) <= 18 and int(version) in versions(self.repo.root / model)
        ):
            return model, OTHER
        return model, version

    def _cache_key(
        self, m: LoadedModel, inputs: dict[str, np.ndarray], wanted: dict[str, Wanted], to_shm: dict[str, ShmRef]
    ) -> bytes | None:
        """The request's response-cache key, or None where the cache is not used: no cache, the model's config
        turns it off, or an output goes to shared memory."""
        if self.cache is None or not m.batching.response_cache or to_shm:
            return None
        return request_key(m.name, m.version, inputs, {name: w.class_count for name, w in wanted.items()})

    def _answered(
        self, m: LoadedModel, total_s: float, input_s: float = 0.0, output_s: float = 0.0, cache_s: float | None = None
    ) -> None:
        """Statistics and metrics of an answered request (``cache_s``: answered from the cache, in that long)."""
        if cache_s is None:
            m.stats.request(True, total_s, input_s, output_s)
        else:
            m.stats.cache_hit(total_s, cache_s)
            self.metrics.cache.labels(m.name, "hit").inc()
        self.metrics.requests.labels(m.name, str(m.version), "OK").inc()
        self.metrics.latency.labels(m.name).observe(total_s)

    # -- the model repository ----------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict]:
        return [row for row in self.repo.index() if not ready_only or row["state"] == "READY"]

    async def load(self, name: str, params: dict) -> None:
        """Triton's load, with its ``config`` parameter (model config JSON: the batching settings, see
        serving.model_config); ``file:`` parameters are refused: model files come only in signed bundles."""
        files = sorted(k for k in params if k.startswith("file:"))
        if files:
            raise InvalidInput(
                f"{SERVER_NAME} loads model files only from signed release bundles (fedge edge"
                f" install), not from the request ({files})"
            )
        unknown = sorted(set(params) - {"config"})
        if unknown:
            raise InvalidInput(f"RepositoryModelLoad takes only the config parameter, not {unknown}")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidInput("the config parameter must be a string of model configuration JSON")
        await asyncio.get_running_loop().run_in_executor(self.executor, self.repo.load, name, config)

    async def unload(self, name: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.repo.unload, name)

    # -- Triton's shared-memory extension (system memory; CUDA memory is refused) ------------------------------
    def cuda_shm_status(self, name: str) -> list:
        if name:
            raise RegionNotFound(f"no CUDA shared memory region {quoted(name)} is registered")
        return []  # none ever is

    def cuda_shm_register(self, peer: str) -> None:
        self.shm.permit(peer)
        raise Unsupported(f"{SERVER_NAME} does not take CUDA shared memory; use system shared memory")

    def cuda_shm_unregister(self, peer: str) -> None:
        self.shm.permit(peer)  # nothing to unregister

    # -- Triton's trace and logging extensions -----------------------------------------------------------------
    def trace_settings(self, model: str, changes: dict[str, list[str]]) -> dict[str, list[str]]:
        if model:
            check_model_name(model)
            if model not in self.repo.names():
                raise ModelNotFound(f"unknown model {quoted(model)}")
        if changes:
            self.tracer.update(changes, model)
        return self.tracer.settings(model)

    def log_settings(self, changes: dict) -> dict:
        for key, value in changes.items():
            if value is None:
                raise InvalidInput(f"log setting {key!r} has no value")
        if changes:
            self.logs.update(changes)
        return self.logs.settings()
