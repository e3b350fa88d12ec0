"""The KServe v2 REST endpoint (Triton's HTTP port, 8000): the routes ``tritonclient.http`` and curl use, each
translated into the data plane's call that the gRPC front end makes too, so both protocols share one data plane
(models, batching, statistics, shared memory, tracing, logging settings). Errors are answered with the HTTP
status the one error table gives (common.errors.status_of), in Triton's error body {"error": "..."}."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import unquote

from google.protobuf.descriptor import FieldDescriptor

from fedge.edge_runtime.common.errors import EdgeError, InvalidInput, message_of, quoted, status_of
from fedge.edge_runtime.frontends.feedback import FeedbackApi
from fedge.edge_runtime.frontends.http_server import Request, Response
from fedge.edge_runtime.frontends.rest_codec import MAX_JSON_BYTES, load_json, parse_infer, render_infer
from fedge.edge_runtime.monitoring.monitor import Monitor
from fedge.edge_runtime.serving.data_plane import SERVER_NAME, DataPlane
from fedge.proto import grpc_service_pb2 as pb

MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
SHM = r"/v2/(?P<kind>system|cuda)sharedmemory(?:/region/(?P<region>[^/]+))?"
ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(path + "$"), handler)
    for method, path, handler in [
        ("GET", r"/v2/health/live", "live"),
        ("GET", r"/v2/health/ready", "ready"),
        ("GET", r"/v2", "server_metadata"),
        ("GET", r"/v2/models/stats", "statistics"),
        ("GET", MODEL, "model_metadata"),
        ("GET", MODEL + "/ready", "model_ready"),
        ("GET", MODEL + "/config", "model_config"),
        ("GET", MODEL + "/stats", "statistics"),
        ("POST", MODEL + "/infer", "infer"),
        ("POST", MODEL + "/feedback", "feedback"),  # fedge's extension (frontends.feedback)
        ("GET", MODEL + "/health", "health"),
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
    ]
]


DECODING_AT_ONCE = 2  # inference bodies being parsed at once, off the event loop; more wait their turn
INLINE_DECODE_BYTES = 64 << 10  # a body up to this size is parsed on the loop (a thread hop would cost more)


class RestApi:
    def __init__(self, plane: DataPlane, monitor: Monitor | None = None, max_json_bytes: int = MAX_JSON_BYTES) -> None:
        self.plane, self.max_json_bytes = plane, max_json_bytes
        self.loop_api = FeedbackApi(plane, monitor)
        self._decoding = asyncio.Semaphore(DECODING_AT_ONCE)

    def inflated_limit(self, headers: dict[str, str]) -> int:
        """A compressed body that is all JSON (no binary tensors follow it) needs no more room than the JSON limit:
        a compression bomb stops there, not at the message limit."""
        return 1 << 62 if "inference-header-content-length" in headers else self.max_json_bytes

    async def __call__(self, req: Request) -> Response:
        allowed = []
        for method, pattern, handler in ROUTES:
            match = pattern.match(req.raw_path or req.path)  # as sent: "digits%2Fconfig" is one (bad) model name
            if match is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            try:
                return await getattr(self, handler)(req, **{k: unquote(v or "") for k, v in match.groupdict().items()})
            except EdgeError as exc:
                return Response.error(status_of(exc)[1], message_of(exc))
            except NotImplementedError:
                return Response.error(501, f"{req.method} {req.path} is not implemented")
        if allowed:
            methods = ", ".join(sorted(set(allowed)))
            resp = Response.error(405, f"{req.method} is not allowed on {req.path}; use {methods}")
            resp.headers["Allow"] = methods
            return resp
        return Response.error(404, f"no KServe v2 endpoint {quoted(req.path)}")

    # -- health and metadata -----------------------------------------------------------------------------------
    async def live(self, req: Request) -> Response:
        return Response(200)

    async def ready(self, req: Request) -> Response:
        return Response(200 if self.plane.ready() else 400)

    async def server_metadata(self, req: Request) -> Response:
        return Response.json({"name": SERVER_NAME, "version": self.plane.version, "extensions": self.plane.extensions})

    async def model_metadata(self, req: Request, model: str, version: str) -> Response:
        return Response.json(message_json(self.plane.model_metadata(model, version)))

    async def model_ready(self, req: Request, model: str, version: str) -> Response:
        return Response(200 if self.plane.model_ready(model, version) else 400)

    async def model_config(self, req: Request, model: str, version: str) -> Response:
        return Response.json(message_json(self.plane.model_config(model, version)))  # Triton's: the config itself

    async def statistics(self, req: Request, model: str = "", version: str = "") -> Response:
        stats = [message_json(s) for s in self.plane.statistics(model, version)]
        monitor = self.loop_api.monitor
        if monitor is not None:  # fedge adds each version's health signals (Triton's clients ignore the key)
            health = {(h["model"], str(h["version"])): h for h in monitor.health(model)["versions"]}
            for entry in stats:
                if (key := (entry["name"], entry["version"])) in health:
                    entry["health"] = health[key]
        return Response.json({"model_stats": stats})

    # -- fedge's feedback and health extension -----------------------------------------------------------------
    async def feedback(self, req: Request, model: str, version: str) -> Response:
        body = load_json(req.body, "feedback")
        return Response.json(await self.loop_api.feedback(model, body))

    async def health(self, req: Request, model: str, version: str) -> Response:
        return Response.json(await self.loop_api.health(model))

    # -- inference ---------------------------------------------------------------------------------------------
    async def infer(self, req: Request, model: str, version: str) -> Response:
        form = []

        async def decode():
            """A small body is parsed at once; a larger one off the event loop (JSON and the arrays), a bounded
            number at a time, so that no body holds up the requests of other clients, gRPC ones included."""
            args = (req.body, req.headers.get("inference-header-content-length"), model, version, self.max_json_bytes)
            if len(req.body) <= INLINE_DECODE_BYTES:
                request, how = parse_infer(*args)
            else:
                async with self._decoding:
                    request, how = await asyncio.get_running_loop().run_in_executor(
                        self.plane.executor, parse_infer, *args
                    )
            form.append(how)
            return request

        body, json_size = await self.plane.infer(model, version, decode, lambda r: render_infer(r, form[0]), req.peer)
        headers = {"Content-Type": "application/octet-stream" if json_size is not None else "application/json"}
        if json_size is not None:
            headers["Inference-Header-Content-Length"] = str(json_size)
        return Response(200, body, headers)

    # -- model repository --------------------------------------------------------------------------------------
    async def repository_index(self, req: Request) -> Response:
        ready = load_json(req.body, "repository index request").get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("ready must be true or false")
        rows = [
            message_json(pb.RepositoryIndexResponse.ModelIndex(**row)) for row in self.plane.repository_index(ready)
        ]
        return Response.json(rows)  # Triton's HTTP answers the bare list

    async def load(self, req: Request, model: str) -> Response:
        params = load_json(req.body, "load request").get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput("parameters must be a JSON object")
        for key, value in params.items():  # ModelRepositoryParameter: bool, int64 or string
            if type(value) not in (bool, int, str):
                raise InvalidInput(f"load parameter {key!r} must be a boolean, an integer or a string")
        await self.plane.load(model, params)
        return Response(200)

    async def unload(self, req: Request, model: str) -> Response:
        await self.plane.unload(model)
        return Response(200)

    # -- Triton's trace, logging and shared-memory extensions --------------------------------------------------
    async def trace_setting(self, req: Request, model: str) -> Response:
        """Values as Triton's HTTP writes them: trace_level a list, the others one string each; a null clears."""
        changes = {}
        for key, value in (load_json(req.body, "trace settings") if req.method == "POST" else {}).items():
            values = [] if value is None else value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise InvalidInput(f"trace setting {key!r} must be a string, a number, a list of them or null")
            changes[key] = [str(v) for v in values]
        settings = self.plane.trace_settings(model, changes)
        return Response.json(
            {key: list(v) if key == "trace_level" else (v[0] if v else "") for key, v in settings.items()}
        )

    async def log_settings(self, req: Request) -> Response:
        changes = {}
        for key, value in (load_json(req.body, "log settings") if req.method == "POST" else {}).items():
            if not (isinstance(value, (bool, str)) or (isinstance(value, int) and value >= 0)):
                raise InvalidInput(f"log setting {key!r} must be a boolean, a count or a string")
            changes[key] = value
        return Response.json(self.plane.log_settings(changes))

    async def shm_status(self, req: Request, kind: str, region: str) -> Response:
        if kind == "cuda":
            return Response.json(self.plane.cuda_shm_status(region))
        return Response.json(
            [
                {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in self.plane.shm.status(region)
            ]
        )  # Triton's HTTP: a list

    async def shm_register(self, req: Request, kind: str, region: str) -> Response:
        if not region:
            raise InvalidInput("register a region at /v2/systemsharedmemory/region/NAME/register")
        doc = load_json(req.body, "register request")
        if kind == "cuda":
            self.plane.cuda_shm_register(req.peer)
        key, offset, size = doc.get("key"), doc.get("offset", 0), doc.get("byte_size")
        if not isinstance(key, str) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, size)
        ):
            raise InvalidInput("a register request needs key (string), byte_size and offset (integers >= 0)")
        assert isinstance(offset, int) and isinstance(size, int)  # checked just above
        self.plane.shm.register(region, key, offset, size, req.peer)
        return Response(200)

    async def shm_unregister(self, req: Request, kind: str, region: str) -> Response:
        if kind == "cuda":
            self.plane.cuda_shm_unregister(req.peer)
        else:
            self.plane.shm.unregister(region, req.peer)
        return Response(200)


def message_json(msg) -> dict:
    """A protobuf message as Triton's HTTP endpoint writes it: proto field names, every scalar field (zeros
    included, as in Triton's statistics), enums by name, 64-bit integers as numbers (protobuf's own JSON mapping,
    json_format, writes them as strings; Triton turns them back into numbers)."""
    out: dict[str, Any] = {}
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
