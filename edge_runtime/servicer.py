"""The gRPC layer (grpc.aio, on the server's event loop): servicers that only translate, and the one interceptor
that maps domain errors to status codes (InvalidInput -> INVALID_ARGUMENT, ModelNotFound -> NOT_FOUND,
ModelUnavailable -> UNAVAILABLE, ...). Nothing here blocks the loop for long: batched inference waits for its
batch on the loop, unbatched inference and model loading run on threads."""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import Executor

import grpc

from proto import grpc_service_pb2 as pb
from proto import grpc_service_pb2_grpc as pb_grpc
from proto import health_pb2, health_pb2_grpc

from . import describe
from .codec import classify, decode_inputs, encode_response, request_priority, request_timeout_us, requested_outputs
from .errors import EdgeError, InvalidInput, ModelNotFound, RegionNotFound, Unsupported
from .log_settings import LogSettings
from .metrics import Metrics
from .repository import ModelRepository
from .response_cache import ResponseCache, request_key
from .shared_memory import SharedMemory
from .tracing import Tracer

log = logging.getLogger("fedge.edge")
SERVER_NAME = "fedge-edge"
EXTENSIONS = ["classification", "model_repository", "model_configuration", "statistics", "logging", "trace",
              "binary_tensor_data"]  # the last: Triton's binary tensors over HTTP (edge_runtime.rest_codec)
STREAM_IN_FLIGHT = 256  # requests of one stream being answered at once; the stream is not read further meanwhile


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, tuple[object, grpc.RpcMethodHandler]] = {}  # method -> (handler, its wrapper)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method.rsplit("/", 1)[-1], handler))
        return cached[1]

    def _wrap(self, method: str, handler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        async def wrapped(request, context):
            started = time.perf_counter()
            try:
                result = inner(request, context)
                result = await result if inspect.isawaitable(result) else result
                _access(method, "OK", started, context)
                return result
            except EdgeError as exc:
                self._count(method, request, exc.code_name)
                _access(method, exc.code_name, started, context)
                await context.abort(getattr(grpc.StatusCode, exc.code_name), str(exc))
            except asyncio.CancelledError:  # the client hung up or its deadline passed
                self._count(method, request, "CANCELLED")
                raise
            except grpc.aio.AbortError:
                raise
            except NotImplementedError:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by {SERVER_NAME}")
            except Exception as exc:  # a bug, not the client's fault: never crash the server
                log.exception("%s failed", method)
                self._count(method, request, "INTERNAL")
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

        return grpc.unary_unary_rpc_method_handler(wrapped, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _count(self, method: str, request, status: str) -> None:
        if method == "ModelInfer":
            count_failure(self._metrics, request, status)


def _access(method: str, status: str, started: float, context) -> None:
    """The access log, at log_verbose_level >= 1 (as the HTTP endpoint's)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("gRPC %s -> %s in %.2f ms (%s)", method, status, (time.perf_counter() - started) * 1e3,
                  context.peer())


def count_failure(metrics: Metrics, request: pb.ModelInferRequest, status: str) -> None:
    metrics.requests.labels(request.model_name, request.model_version or "", status).inc()


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repo: ModelRepository, metrics: Metrics, version: str, executor: Executor,
                 shm: SharedMemory | None = None, logs: LogSettings | None = None, tracer: Tracer | None = None,
                 strict_readiness: bool = True, cache: ResponseCache | None = None) -> None:
        self.repo, self.metrics, self.version = repo, metrics, version
        self.cache = cache  # --cache-config: answers of repeated requests, for models whose config allows it
        self.strict_readiness = strict_readiness
        self.executor = executor  # threads for unbatched inference and model loading
        self.shm = shm or SharedMemory(allowed=False)
        self.logs = logs or LogSettings()
        self.tracer = tracer or Tracer()
        self.extensions = EXTENSIONS + (["system_shared_memory"] if self.shm.allowed else [])
        self.stopping = False  # set by stop(): not ready, streams read no further requests
        self.in_flight = 0     # inferences begun and not yet answered (any protocol)
        self._quiet = asyncio.Event()  # set once stopping and nothing is in flight
        self._stream_readers: set[asyncio.Task] = set()

    def stop(self) -> None:
        """The server is stopping (on the loop): report not ready, and let every open stream answer what it has
        read and end. Inferences in flight go on; the caller waits for them with :meth:`quiet`."""
        self.stopping = True
        for reader in self._stream_readers:
            reader.cancel()
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

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.ready())

    def ready(self) -> bool:
        """Triton's strict readiness (its default): ready once every model that should serve does; never while
        stopping."""
        return not self.stopping and (not self.strict_readiness or not self.repo.unready())

    async def ModelReady(self, request, context):
        try:
            self.repo.get(request.name, request.version)
        except EdgeError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=self.extensions)

    async def ModelMetadata(self, request, context):
        return describe.metadata(self.repo.get(request.name, request.version))

    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=describe.config(self.repo.get(request.name, request.version)))

    async def ModelStatistics(self, request, context):
        models = [self.repo.get(request.name, request.version)] if request.name else self.repo.live()
        return pb.ModelStatisticsResponse(model_stats=[m.stats.to_proto(m.name, str(m.version)) for m in models])

    async def ModelInfer(self, request, context):
        return await self.infer(request, context.peer())

    async def ModelStreamInfer(self, request_iterator, context):
        """Triton's streaming inference: each request of the stream is answered as soon as it is done (requests
        of one stream are batched like any others); a failed request gets ``error_message`` and the stream goes
        on. The stream ends once the client has closed its side and every answer is sent; when the server stops,
        requests already read are answered and the stream ends with UNAVAILABLE."""
        answers: asyncio.Queue = asyncio.Queue()
        running: set[asyncio.Task] = set()
        peer = context.peer()

        async def answer(request) -> None:
            try:
                answers.put_nowait(pb.ModelStreamInferResponse(infer_response=await self.infer(request, peer)))
            except EdgeError as exc:
                count_failure(self.metrics, request, exc.code_name)
                answers.put_nowait(pb.ModelStreamInferResponse(error_message=f"[{exc.code_name}] {exc}"))
            except Exception as exc:  # a bug, not the client's fault: this request fails, the stream goes on
                log.exception("ModelStreamInfer failed")
                count_failure(self.metrics, request, "INTERNAL")
                answers.put_nowait(pb.ModelStreamInferResponse(error_message=f"[INTERNAL] {type(exc).__name__}: {exc}"))

        async def read() -> bool:
            """Read and answer requests until the client closes its side (False) or the server stops (True)."""
            stopped = False
            try:
                try:
                    async for request in request_iterator:
                        if len(running) >= STREAM_IN_FLIGHT:  # back-pressure: read on once answers go out
                            await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                        task = asyncio.ensure_future(answer(request))
                        running.add(task)
                        task.add_done_callback(running.discard)
                except asyncio.CancelledError:
                    if not self.stopping:
                        raise
                    stopped = True
                while running:
                    try:
                        await asyncio.wait(set(running))
                    except asyncio.CancelledError:
                        if not self.stopping:
                            raise
                return stopped
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        self._stream_readers.add(reader)
        try:
            while (resp := await answers.get()) is not None:
                yield resp
            if await reader:  # re-raises a broken request stream
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{SERVER_NAME} is stopping: every request this"
                                    " stream sent before was answered")
        finally:
            self._stream_readers.discard(reader)
            for task in (reader, *running):
                task.cancel()

    async def infer(self, request, peer: str) -> pb.ModelInferResponse:
        """One inference, whichever way it came (ModelInfer, a stream, the REST endpoint)."""
        self.in_flight += 1
        try:
            return await self._infer(request, peer)
        finally:
            self.in_flight -= 1
            if self.stopping and not self.in_flight:
                self._quiet.set()

    async def _infer(self, request, peer: str) -> pb.ModelInferResponse:
        started = time.perf_counter()
        m = self.repo.get(request.model_name, request.model_version)
        shm = self.shm.client(peer)
        trace = self.tracer.sample(m.name, m.version, request.id) if self.tracer.active else None
        if trace is not None:
            trace.mark("REQUEST_START", started)
        try:
            wanted = requested_outputs(request, m.outputs)
            to_shm = {name: w.shm for name, w in wanted.items() if w.shm is not None}
            for name, ref in to_shm.items():  # a bad output region fails the request before it runs
                shm.check(ref, f"output {name!r}")
            inputs = decode_inputs(request, m.inputs, m.max_batch_size, shm)
            key = self._cache_key(m, inputs, wanted, to_shm)
            if key is not None:
                looked = time.perf_counter()
                hit = self.cache.get(key)
                lookup_s = time.perf_counter() - looked
                if hit is not None:
                    resp = encode_response(m.name, str(m.version), hit, request.id)
                    self._answered(m, time.perf_counter() - started, cache_s=lookup_s)
                    return resp
            feeds = m.preprocess(inputs)
            decoded = time.perf_counter()
            if trace is not None:
                trace.mark("QUEUE_START", decoded)
            outputs = await m.run_async(feeds, self.executor, trace, request_timeout_us(request),
                                         request_priority(request))
            ran = time.perf_counter()
            outputs = m.postprocess(outputs)
            outputs = {name: classify(outputs[name], w.class_count, m.manifest.labels) if w.class_count
                       else outputs[name] for name, w in wanted.items()}
            resp = encode_response(m.name, str(m.version), outputs, request.id, to_shm, shm)
            if key is not None:
                stored = time.perf_counter()
                self.cache.put(key, m.name, outputs)
                m.stats.cache_miss(lookup_s + time.perf_counter() - stored)
                self.metrics.cache.labels(m.name, "miss").inc()
        except BaseException:
            m.stats.request(False, time.perf_counter() - started)
            raise
        finally:
            if trace is not None:
                trace.mark("REQUEST_END", time.perf_counter())
                self.tracer.finish(trace)
        done = time.perf_counter()
        self._answered(m, done - started, decoded - started, done - ran)
        return resp

    def _cache_key(self, m, inputs, wanted, to_shm) -> bytes | None:
        """The request's response-cache key, or None where the cache is not used: no cache, the model's config
        turns it off, or an output goes to shared memory."""
        if self.cache is None or not m.batching.response_cache or to_shm:
            return None
        return request_key(m.name, m.version, inputs, {name: w.class_count for name, w in wanted.items()})

    def _answered(self, m, total_s: float, input_s: float = 0.0, output_s: float = 0.0,
                  cache_s: float | None = None) -> None:
        """Statistics and metrics of an answered request (``cache_s``: answered from the cache, in that long)."""
        if cache_s is None:
            m.stats.request(True, total_s, input_s, output_s)
        else:
            m.stats.cache_hit(total_s, cache_s)
            self.metrics.cache.labels(m.name, "hit").inc()
        self.metrics.requests.labels(m.name, str(m.version), "OK").inc()
        self.metrics.latency.labels(m.name).observe(total_s)

    async def RepositoryIndex(self, request, context):
        resp = pb.RepositoryIndexResponse()
        for row in self.repo.index():
            if not request.ready or row["state"] == "READY":
                resp.models.add(**row)
        return resp

    async def RepositoryModelLoad(self, request, context):
        """Triton's load, with its ``config`` parameter (model config JSON: the batching settings, see
        edge_runtime.model_config); ``file:`` parameters are refused: model files come only in signed bundles."""
        params = dict(request.parameters)
        files = sorted(k for k in params if k.startswith("file:"))
        if files:
            raise InvalidInput(f"{SERVER_NAME} loads model files only from signed release bundles (fedge edge"
                               f" install), not from the request ({files})")
        unknown = sorted(set(params) - {"config"})
        if unknown:
            raise InvalidInput(f"RepositoryModelLoad takes only the config parameter, not {unknown}")
        config = params["config"].string_param if "config" in params else None
        await asyncio.get_running_loop().run_in_executor(self.executor, self.repo.load, request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await asyncio.get_running_loop().run_in_executor(self.executor, self.repo.unload, request.model_name)
        return pb.RepositoryModelUnloadResponse()


    # -- Triton's shared-memory extension (system memory; CUDA memory is refused) ------------------------------
    async def SystemSharedMemoryStatus(self, request, context):
        resp = pb.SystemSharedMemoryStatusResponse()
        for r in self.shm.status(request.name):
            resp.regions[r.name].CopyFrom(resp.RegionStatus(name=r.name, key=r.key, offset=r.offset,
                                                            byte_size=r.byte_size))
        return resp

    async def SystemSharedMemoryRegister(self, request, context):
        self.shm.register(request.name, request.key, request.offset, request.byte_size, context.peer())
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request, context):
        self.shm.unregister(request.name, context.peer())
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request, context):
        if request.name:
            raise RegionNotFound(f"no CUDA shared memory region {request.name!r} is registered")
        return pb.CudaSharedMemoryStatusResponse()  # none ever is

    async def CudaSharedMemoryRegister(self, request, context):
        self.shm.permit(context.peer())
        raise Unsupported(f"{SERVER_NAME} does not take CUDA shared memory; use system shared memory")

    async def CudaSharedMemoryUnregister(self, request, context):
        self.shm.permit(context.peer())
        return pb.CudaSharedMemoryUnregisterResponse()  # nothing to unregister


    async def TraceSetting(self, request, context):
        if request.model_name and request.model_name not in self.repo.names():
            raise ModelNotFound(f"unknown model {request.model_name!r}")
        changes = {key: list(value.value) for key, value in request.settings.items()}
        if changes:
            self.tracer.update(changes, request.model_name)
        resp = pb.TraceSettingResponse()
        for key, values in self.tracer.settings(request.model_name).items():
            resp.settings[key].value.extend(values)
        return resp

    async def LogSettings(self, request, context):
        changes = {}
        for key, value in request.settings.items():
            kind = value.WhichOneof("parameter_choice")
            if kind is None:
                raise InvalidInput(f"log setting {key!r} has no value")
            changes[key] = getattr(value, kind)
        if changes:
            self.logs.update(changes)
        resp = pb.LogSettingsResponse()
        for key, value in self.logs.settings().items():
            kind = "bool_param" if isinstance(value, bool) else "uint32_param" if isinstance(value, int) else "string_param"
            setattr(resp.settings[key], kind, value)
        return resp


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: "" is the server (SERVING when ServerReady says ready); a model name is that model. When
    the server stops, every Watch says NOT_SERVING and ends."""

    def __init__(self, repo: ModelRepository, ready=lambda: True, stopping=lambda: False) -> None:
        self.repo, self.ready, self.stopping = repo, ready, stopping

    WATCH_POLL_S = 0.5

    def _status(self, service: str) -> int:
        status = health_pb2.HealthCheckResponse
        if self.stopping():
            return status.NOT_SERVING
        if not service:
            return status.SERVING if self.ready() else status.NOT_SERVING
        try:
            self.repo.get(service)
        except ModelNotFound:
            return status.SERVICE_UNKNOWN
        except EdgeError:
            return status.NOT_SERVING
        return status.SERVING

    async def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(self, request, context):
        """The current status at once, then every change, until the client hangs up."""
        last = None
        while True:
            now = self._status(request.service)
            if now != last:
                yield health_pb2.HealthCheckResponse(status=now)
                last = now
            if self.stopping():
                return
            await asyncio.sleep(self.WATCH_POLL_S)
