"""The KServe v2 REST endpoint (Triton's HTTP port, 8000): the routes ``tritonclient.http`` and curl use, each
translated into the Open Inference Protocol message the gRPC servicer takes and answered by that servicer, so
both protocols share one data plane (models, batching, statistics, shared memory, tracing, logging settings).
Domain errors become HTTP statuses here, in one place, with Triton's error body {"error": "..."}."""
from __future__ import annotations

import asyncio
import re

from google.protobuf.descriptor import FieldDescriptor

from proto import grpc_service_pb2 as pb

from .errors import EdgeError, InvalidInput
from .http_server import Request, Response
from .rest_codec import load_json, parse_infer, render_infer
from .servicer import InferenceServicer, count_failure

# Triton's mapping of error kinds to HTTP statuses, plus 413 for a request over the size limit
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "ALREADY_EXISTS": 400,
               "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 413, "INTERNAL": 500,
               "UNIMPLEMENTED": 501, "UNAVAILABLE": 503}
MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
SHM = r"/v2/(?P<kind>system|cuda)sharedmemory(?:/region/(?P<region>[^/]+))?"
ROUTES: list[tuple[str, re.Pattern, str]] = [(method, re.compile(path + "$"), handler) for method, path, handler in [
    ("GET", r"/v2/health/live", "live"),
    ("GET", r"/v2/health/ready", "ready"),
    ("GET", r"/v2", "server_metadata"),
    ("GET", r"/v2/models/stats", "statistics"),
    ("GET", MODEL, "model_metadata"),
    ("GET", MODEL + "/ready", "model_ready"),
    ("GET", MODEL + "/config", "model_config"),
    ("GET", MODEL + "/stats", "statistics"),
    ("POST", MODEL + "/infer", "infer"),
    ("POST", r"/v2/repository/index", "repository_index"),
    ("POST", r"/v2/repository/models/(?P<model>[^/]+)/load", "load"),
    ("POST", r"/v2/repository/models/(?P<model>[^/]+)/unload", "unload"),
    ("GET", r"/v2(?:/models/(?P<model>[^/]+))?/trace/setting", "trace_setting"),
    ("POST", r"/v2(?:/models/(?P<model>[^/]+))?/trace/setting", "trace_setting"),
    ("GET", r"/v2/logging", "log_settings"),
    ("POST", r"/v2/logging", "log_settings"),
    ("GET", SHM + "/status", "shm_status"),
    ("POST", SHM + "/register", "shm_register"),
    ("POST", SHM + "/unregister", "shm_unregister"),
]]


class _Context:
    """What the servicer reads from a gRPC context: only who the client is."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


class RestApi:
    def __init__(self, servicer: InferenceServicer) -> None:
        self.servicer = servicer

    async def __call__(self, req: Request) -> Response:
        allowed = []
        for method, pattern, handler in ROUTES:
            match = pattern.match(req.path)
            if match is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            try:
                return await getattr(self, handler)(req, **{k: v or "" for k, v in match.groupdict().items()})
            except EdgeError as exc:
                return Response.error(HTTP_STATUS.get(exc.code_name, 500), str(exc))
            except NotImplementedError:
                return Response.error(501, f"{req.method} {req.path} is not implemented")
        if allowed:
            methods = ", ".join(sorted(set(allowed)))
            resp = Response.error(405, f"{req.method} is not allowed on {req.path}; use {methods}")
            resp.headers["Allow"] = methods
            return resp
        return Response.error(404, f"no KServe v2 endpoint {req.path!r}")

    def _ctx(self, req: Request) -> _Context:
        return _Context(req.peer)

    # -- health and metadata -----------------------------------------------------------------------------------
    async def live(self, req: Request) -> Response:
        return Response(200)

    async def ready(self, req: Request) -> Response:
        ok = (await self.servicer.ServerReady(pb.ServerReadyRequest(), self._ctx(req))).ready
        return Response(200 if ok else 400)

    async def server_metadata(self, req: Request) -> Response:
        return Response.json(message_json(await self.servicer.ServerMetadata(pb.ServerMetadataRequest(),
                                                                             self._ctx(req))))

    async def model_metadata(self, req: Request, model: str, version: str) -> Response:
        resp = await self.servicer.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), self._ctx(req))
        return Response.json(message_json(resp))

    async def model_ready(self, req: Request, model: str, version: str) -> Response:
        resp = await self.servicer.ModelReady(pb.ModelReadyRequest(name=model, version=version), self._ctx(req))
        return Response(200 if resp.ready else 400)

    async def model_config(self, req: Request, model: str, version: str) -> Response:
        resp = await self.servicer.ModelConfig(pb.ModelConfigRequest(name=model, version=version), self._ctx(req))
        return Response.json(message_json(resp.config))  # Triton's HTTP answers the config itself

    async def statistics(self, req: Request, model: str = "", version: str = "") -> Response:
        resp = await self.servicer.ModelStatistics(pb.ModelStatisticsRequest(name=model, version=version),
                                                   self._ctx(req))
        return Response.json(message_json(resp))

    # -- inference ---------------------------------------------------------------------------------------------
    async def infer(self, req: Request, model: str, version: str) -> Response:
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        try:
            request, form = parse_infer(req.body, req.headers.get("inference-header-content-length"), model, version)
            body, json_size = render_infer(await self.servicer.infer(request, req.peer), form)
        except EdgeError as exc:
            count_failure(self.servicer.metrics, request, exc.code_name)
            raise
        except asyncio.CancelledError:  # the client hung up
            count_failure(self.servicer.metrics, request, "CANCELLED")
            raise
        headers = {"Content-Type": "application/octet-stream" if json_size is not None else "application/json"}
        if json_size is not None:
            headers["Inference-Header-Content-Length"] = str(json_size)
        return Response(200, body, headers)

    # -- model repository --------------------------------------------------------------------------------------
    async def repository_index(self, req: Request) -> Response:
        ready = load_json(req.body, "repository index request").get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("ready must be true or false")
        resp = await self.servicer.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready), self._ctx(req))
        return Response.json([message_json(m) for m in resp.models])  # Triton's HTTP answers the bare list

    async def load(self, req: Request, model: str) -> Response:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        params = load_json(req.body, "load request").get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput("parameters must be a JSON object")
        for key, value in params.items():  # ModelRepositoryParameter: bool, int64 or string (the servicer checks)
            kind = {bool: "bool_param", int: "int64_param", str: "string_param"}.get(type(value))
            if kind is None:
                raise InvalidInput(f"load parameter {key!r} must be a boolean, an integer or a string")
            setattr(request.parameters[key], kind, value)
        await self.servicer.RepositoryModelLoad(request, self._ctx(req))
        return Response(200)

    async def unload(self, req: Request, model: str) -> Response:
        await self.servicer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=model), self._ctx(req))
        return Response(200)

    # -- Triton's trace, logging and shared-memory extensions --------------------------------------------------
    async def trace_setting(self, req: Request, model: str) -> Response:
        """Values as Triton's HTTP writes them: trace_level a list, the others one string each; a null clears."""
        request = pb.TraceSettingRequest(model_name=model)
        for key, value in (load_json(req.body, "trace settings") if req.method == "POST" else {}).items():
            values = [] if value is None else value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise InvalidInput(f"trace setting {key!r} must be a string, a number, a list of them or null")
            request.settings[key].value.extend(str(v) for v in values)
        resp = await self.servicer.TraceSetting(request, self._ctx(req))
        return Response.json({key: list(v.value) if key == "trace_level" else (v.value[0] if v.value else "")
                              for key, v in resp.settings.items()})

    async def log_settings(self, req: Request) -> Response:
        request = pb.LogSettingsRequest()
        for key, value in (load_json(req.body, "log settings") if req.method == "POST" else {}).items():
            p = request.settings[key]
            if isinstance(value, bool):
                p.bool_param = value
            elif isinstance(value, int) and value >= 0:
                p.uint32_param = value
            elif isinstance(value, str):
                p.string_param = value
            else:
                raise InvalidInput(f"log setting {key!r} must be a boolean, a count or a string")
        resp = await self.servicer.LogSettings(request, self._ctx(req))
        return Response.json({key: getattr(p, p.WhichOneof("parameter_choice")) for key, p in resp.settings.items()})

    async def shm_status(self, req: Request, kind: str, region: str) -> Response:
        if kind == "cuda":
            await self.servicer.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest(name=region), self._ctx(req))
            return Response.json([])
        resp = await self.servicer.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name=region),
                                                            self._ctx(req))
        return Response.json([message_json(r) for r in resp.regions.values()])  # Triton's HTTP: a list

    async def shm_register(self, req: Request, kind: str, region: str) -> Response:
        if not region:
            raise InvalidInput("register a region at /v2/systemsharedmemory/region/NAME/register")
        doc = load_json(req.body, "register request")
        if kind == "cuda":
            await self.servicer.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name=region),
                                                         self._ctx(req))
        key, offset, size = doc.get("key"), doc.get("offset", 0), doc.get("byte_size")
        if not isinstance(key, str) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                               for v in (offset, size)):
            raise InvalidInput("a register request needs key (string), byte_size and offset (integers >= 0)")
        await self.servicer.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name=region, key=key, offset=offset, byte_size=size), self._ctx(req))
        return Response(200)

    async def shm_unregister(self, req: Request, kind: str, region: str) -> Response:
        if kind == "cuda":
            await self.servicer.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest(name=region),
                                                           self._ctx(req))
        else:
            await self.servicer.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=region),
                                                             self._ctx(req))
        return Response(200)


def message_json(msg) -> dict:
    """A protobuf message as Triton's HTTP endpoint writes it: proto field names, every scalar field (zeros
    included, as in Triton's statistics), enums by name, 64-bit integers as numbers (protobuf's own JSON mapping,
    json_format, writes them as strings; Triton turns them back into numbers)."""
    out = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: _scalar(vfd, v) for k, v in value.items()}
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            out[fd.name] = [_scalar(fd, v) for v in value]
        elif fd.type == FieldDescriptor.TYPE_MESSAGE or fd.containing_oneof is not None:
            if msg.HasField(fd.name):
                out[fd.name] = _scalar(fd, value)
        else:
            out[fd.name] = _scalar(fd, value)
    return out


def _scalar(fd, value):
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else value
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return value.decode("latin-1")
    return value
