"""The gRPC front end (grpc.aio, on the server's event loop): servicers that only translate Open Inference Protocol
messages to and from the data plane's calls, and the one interceptor that answers errors with the status code
the error table gives (InvalidInput -> INVALID_ARGUMENT, ModelNotFound -> NOT_FOUND, ModelUnavailable ->
UNAVAILABLE, ...)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time

import grpc

from fedge.edge_runtime.common.errors import EdgeError, ModelNotFound, message_of, status_of
from fedge.edge_runtime.frontends.feedback import FeedbackApi
from fedge.edge_runtime.frontends.grpc_codec import infer_request, infer_response, parameters
from fedge.edge_runtime.serving.data_plane import SERVER_NAME, DataPlane
from fedge.edge_runtime.serving.model_repository import ModelRepository
from fedge.proto import feedback_pb2, feedback_pb2_grpc, health_pb2, health_pb2_grpc
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("fedge.edge")
STREAM_IN_FLIGHT = 256  # requests of one stream being answered at once; the stream is not read further meanwhile


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Every unary call's error answered with its status from the one table (common.errors.status_of); a bug is
    logged with its traceback and answered INTERNAL, never crashing the server."""

    def __init__(self) -> None:
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
            except (asyncio.CancelledError, grpc.aio.AbortError):  # the client hung up or its deadline passed
                raise
            except Exception as exc:
                code, _ = status_of(exc)
                _access(method, code, started, context)
                await context.abort(getattr(grpc.StatusCode, code), error_message(method, exc))

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def error_message(method: str, exc: Exception) -> str:
    if isinstance(exc, EdgeError):
        return message_of(exc)
    if isinstance(exc, NotImplementedError):
        return f"{method} is not implemented by {SERVER_NAME}"
    log.exception("%s failed", method)  # a bug, not the client's fault
    return message_of(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _access(method: str, status: str, started: float, context) -> None:
    """The access log, at log_verbose_level >= 1 (as the HTTP endpoint's)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "gRPC %s -> %s in %.2f ms (%s)", method, status, (time.perf_counter() - started) * 1e3, context.peer()
        )


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._stream_readers: set[asyncio.Task] = set()
        plane.on_stop(self._stop_streams)

    def _stop_streams(self) -> None:
        """The server is stopping: every open stream answers what it has read, then ends."""
        for reader in self._stream_readers:
            reader.cancel()

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.plane.version, extensions=self.plane.extensions)

    async def ModelMetadata(self, request, context):
        return self.plane.model_metadata(request.name, request.version)

    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.plane.model_config(request.name, request.version))

    async def ModelStatistics(self, request, context):
        return pb.ModelStatisticsResponse(model_stats=self.plane.statistics(request.name, request.version))

    async def ModelInfer(self, request, context):
        return await self.infer(request, context.peer())

    def infer(self, request: pb.ModelInferRequest, peer: str):
        return self.plane.infer(
            request.model_name, request.model_version, lambda: infer_request(request), infer_response, peer
        )

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
            except Exception as exc:  # this request fails, the stream goes on
                code, _ = status_of(exc)
                answers.put_nowait(
                    pb.ModelStreamInferResponse(error_message=f"[{code}] {error_message('ModelStreamInfer', exc)}")
                )

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
                    if not self.plane.stopping:
                        raise
                    stopped = True
                while running:
                    try:
                        await asyncio.wait(set(running))
                    except asyncio.CancelledError:
                        if not self.plane.stopping:
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
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{SERVER_NAME} is stopping: every request this stream sent before was answered",
                )
        finally:
            self._stream_readers.discard(reader)
            for task in (reader, *running):
                task.cancel()

    async def RepositoryIndex(self, request, context):
        resp = pb.RepositoryIndexResponse()
        for row in self.plane.repository_index(request.ready):
            resp.models.add(**row)
        return resp

    async def RepositoryModelLoad(self, request, context):
        await self.plane.load(request.model_name, parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- Triton's shared-memory extension ----------------------------------------------------------------------
    async def SystemSharedMemoryStatus(self, request, context):
        resp = pb.SystemSharedMemoryStatusResponse()
        for r in self.plane.shm.status(request.name):
            resp.regions[r.name].CopyFrom(
                resp.RegionStatus(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size)
            )
        return resp

    async def SystemSharedMemoryRegister(self, request, context):
        self.plane.shm.register(request.name, request.key, request.offset, request.byte_size, context.peer())
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request, context):
        self.plane.shm.unregister(request.name, context.peer())
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request, context):
        self.plane.cuda_shm_status(request.name)
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(self, request, context):
        self.plane.cuda_shm_register(context.peer())

    async def CudaSharedMemoryUnregister(self, request, context):
        self.plane.cuda_shm_unregister(context.peer())
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- Triton's trace and logging extensions -----------------------------------------------------------------
    async def TraceSetting(self, request, context):
        changes = {key: list(value.value) for key, value in request.settings.items()}
        resp = pb.TraceSettingResponse()
        for key, values in self.plane.trace_settings(request.model_name, changes).items():
            resp.settings[key].value.extend(values)
        return resp

    async def LogSettings(self, request, context):
        changes = {
            key: getattr(v, v.WhichOneof("parameter_choice")) if v.WhichOneof("parameter_choice") else None
            for key, v in request.settings.items()
        }
        resp = pb.LogSettingsResponse()
        for key, value in self.plane.log_settings(changes).items():
            kind = (
                "bool_param"
                if isinstance(value, bool)
                else "uint32_param"
                if isinstance(value, int)
                else "string_param"
            )
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


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    """fedge.feedback.v1: the REST feedback and health endpoints over gRPC (errors by the one table, through the
    interceptor)."""

    def __init__(self, api: FeedbackApi) -> None:
        self.api = api

    async def Feedback(self, request, context):
        body = {"label": request.label, **({"id": request.id} if request.id else {})}
        if request.text:
            body["text"] = request.text
        got = await self.api.feedback(request.model, body)
        return feedback_pb2.FeedbackResponse(
            matched=got["matched"],
            was_correct=got["was_correct"],
            served_label=got["served_label"],
            version=got["version"],
        )

    async def ModelHealth(self, request, context):
        return feedback_pb2.ModelHealthResponse(json=json.dumps(await self.api.health(request.model)))
