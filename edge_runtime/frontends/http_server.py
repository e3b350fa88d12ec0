"""The HTTP/1.1 server of the KServe v2 REST endpoint (frontends.rest), on asyncio streams: h11 parses and frames
the protocol (request line, headers, Content-Length and chunked bodies, keep-alive, ``Expect: 100-continue``,
responses); this module holds the connections: timeouts for a request's head, its body and an idle keep-alive
connection, a connection limit, a body limit (413 before the body is read), gzip/deflate request bodies inflated off
the loop to a bounded size and responses compressed for clients that accept it (what tritonclient.http's
compression options send and accept), TLS, and cancellation of requests whose client hung up. Three shapes that h11
tolerates are refused as RFC 9112 asks of a server that does not want to be smuggled past: a line folded onto the
one before (obs-fold), a bare LF, and Content-Length beside Transfer-Encoding. It runs on the gRPC server's event
loop, so HTTP and gRPC requests are batched together."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import ssl
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fedge.edge_runtime.common.errors import ConfigError

log = logging.getLogger("fedge.edge")
MAX_HEAD_BYTES = 64 << 10  # request line and headers
DECODERS = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "deflate": lambda: zlib.decompressobj()}
INFLATING_AT_ONCE = 1  # compressed request bodies inflated at once (one core at most, on a 2-core device); more wait
READ_BYTES = 64 << 10
HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a request's head
LENIENT = re.compile(rb"\r\n[ \t]|(?<!\r)\n")  # a folded line (obs-fold) or a bare LF, which h11 accepts


def _headers(request: h11.Request) -> dict[str, str]:
    """h11's headers (validated, lower-case names), with repeated ones joined by commas; Content-Length beside
    Transfer-Encoding, which h11 resolves in Transfer-Encoding's favour, is refused (RFC 9112 6.1: the shape of
    request smuggling)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers and name != "content-length" else value
    if "transfer-encoding" in headers and "content-length" in headers:
        raise HttpError(400, "a request with both Transfer-Encoding and Content-Length is refused")
    if request.http_version not in (b"1.0", b"1.1"):
        raise HttpError(505, f"HTTP/{request.http_version[:10].decode('latin-1')} is not served here; use HTTP/1.1")
    return headers


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most ``limit`` bytes: a compression bomb stops at the limit (zlib
    never writes more than max_length), it is not inflated whole and measured afterwards."""
    decoder = DECODERS[encoding]()
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the {encoding} request body is corrupt: {exc}") from None
    if len(out) > limit:
        raise HttpError(413, f"the decompressed request body exceeds the limit of {limit} bytes")
    return out


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str  # as gRPC writes it: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"
    raw_path: str = ""  # as sent, not percent-decoded: routes match on it (an encoded '/' stays in a name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, doc, status: int = 200) -> Response:
        return cls(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """Triton's error body: {"error": "..."} (what tritonclient.http raises with)."""
        return cls.json({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A request that cannot be read; answered with ``status`` and the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpLimits:
    """What a client may hold of the server (``fedge edge serve --http-*``)."""

    header_timeout_s: float = 10.0  # from a request's first byte to the end of its headers (and, on a new
    # connection, from connecting to that first byte)
    body_idle_s: float = 30.0  # longest silence while a request body arrives
    keepalive_s: float = 75.0  # an idle keep-alive connection is closed after this long
    max_connections: int = 1024  # open HTTP connections; one more is answered 503 and closed

    def __post_init__(self) -> None:
        if min(self.header_timeout_s, self.body_idle_s, self.keepalive_s) <= 0 or self.max_connections < 1:
            raise ConfigError("HTTP timeouts must be > 0 s and the connection limit >= 1")


class HttpServer:
    def __init__(
        self,
        handle: Handler,
        max_body_bytes: int,
        tls: ssl.SSLContext | None = None,
        limits: HttpLimits = HttpLimits(),
        inflated_limit: Callable[[dict[str, str]], int] | None = None,
    ) -> None:
        """``inflated_limit(headers)``: how far a compressed body with these headers may inflate (default: the body
        limit), so that an application whose bodies are small (JSON) stops a compression bomb there."""
        self._handle, self._max_body, self._tls, self._limits = handle, max_body_bytes, tls, limits
        self._inflated_limit = inflated_limit or (lambda headers: max_body_bytes)
        self._inflating = asyncio.Semaphore(INFLATING_AT_ONCE)
        self._inflater = ThreadPoolExecutor(INFLATING_AT_ONCE, "fedge-inflate", initializer=_lower_priority)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # connections between a request's head and its answer
        self._draining = False
        self._drained = asyncio.Event()  # set once draining and no connection is busy

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:  # what asyncio.start_server builds, with our reader
            return asyncio.StreamReaderProtocol(_Reader(limit=MAX_HEAD_BYTES, loop=loop), self._connection, loop=loop)

        self._server = await loop.create_server(protocol, host, port, ssl=self._tls)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 0.0) -> None:
        """Accept no more connections, close the idle ones, let each busy one answer its request (then close it),
        for at most ``grace`` seconds; whatever is left then is cut off."""
        if self._server is None:
            return
        self._server.close()
        self._draining = True
        for task in self._connections - self._busy:  # idle keep-alive connections would hold wait_closed forever
            task.cancel()
        if self._busy:
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("HTTP: %d request(s) still unanswered after %.0f s: cut off", len(self._busy), grace)
        for task in list(self._connections):
            task.cancel()
        await self._server.wait_closed()
        self._inflater.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._limits.max_connections:  # refused at once; gRPC is another port
            await _refuse(reader, writer)
            return
        task = asyncio.current_task()
        assert task is not None  # a connection handler runs as a task
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            peer = peer_name(writer.get_extra_info("peername"))
            idle = self._limits.header_timeout_s  # a new connection's first byte is part of its first request
            while True:
                try:
                    req = await self._read(conn, reader, writer, peer, idle)
                    idle = self._limits.keepalive_s
                except HttpError as exc:
                    await _send(conn, writer, Response.error(exc.status, str(exc)), False)
                    return
                if req is None:
                    return
                resp = await self._answer(req, cast(_Reader, reader))  # the protocol factory makes _Readers
                if resp is None:
                    return  # the client hung up
                await _send(
                    conn,
                    writer,
                    _compressed(resp, req.headers.get("accept-encoding", "")),
                    not self._draining,
                    head_only=req.method == "HEAD",
                )  # a stopping server closes
                self._idle(task)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # either side asked to close (Connection: close, HTTP/1.0)
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            self._idle(task)
            writer.close()

    async def _answer(self, req: Request, reader: _Reader) -> Response | None:
        """The handler's response to ``req``: 500 for a bug (the server keeps serving), None if the client hung up
        while it was computed (the handler is then cancelled, as a gRPC request is)."""
        started = time.perf_counter()
        handler = asyncio.ensure_future(self._handle(req))
        reader.on_hangup = handler.cancel
        try:
            resp = await handler
        except asyncio.CancelledError:
            if reader.hung_up:
                return None
            raise
        except Exception as exc:  # a bug, not the client's fault
            log.exception("%s %s failed", req.method, req.path)
            resp = Response.error(500, f"{type(exc).__name__}: {exc}")
        finally:
            reader.on_hangup = None
        if log.isEnabledFor(logging.DEBUG):  # the access log, at log_verbose_level >= 1
            log.debug(
                "HTTP %s %s -> %d in %.2f ms (%s)",
                req.method,
                req.path,
                resp.status,
                (time.perf_counter() - started) * 1e3,
                req.peer,
            )
        return resp

    def _idle(self, task: asyncio.Task) -> None:
        self._busy.discard(task)
        if self._draining and not self._busy:
            self._drained.set()

    async def _read(self, conn: h11.Connection, reader, writer, peer: str, idle: float) -> Request | None:
        """The next request: its first byte within ``idle`` seconds (else the connection is closed without a
        word), then its headers within the header timeout (a client that sends half a request line and then a
        byte now and then holds a connection that long, no longer: 408), then its body."""
        raw = bytearray(conn.trailing_data[0])  # what a pipelining client sent after the request before
        if not raw:
            try:
                raw += await asyncio.wait_for(reader.read(READ_BYTES), idle)
            except asyncio.TimeoutError:
                return None  # idle
            if not raw:
                return None  # closed between requests
            conn.receive_data(bytes(raw))
        head = await self._head(conn, reader, raw)
        if head is None:
            return None
        current = asyncio.current_task()
        assert current is not None
        self._busy.add(current)  # a request has come: a stopping server answers it
        headers = _headers(head)
        body = await self._body(conn, reader, writer, headers)
        url = urlsplit(head.target.decode("latin-1"))
        return Request(
            head.method.decode("latin-1"), unquote(url.path), parse_qs(url.query), headers, body, peer, url.path
        )

    async def _head(self, conn: h11.Connection, reader, raw: bytearray) -> h11.Request | None:
        loop, wait = asyncio.get_running_loop(), self._limits.header_timeout_s
        deadline = loop.time() + wait
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise HttpError(431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes") from None
                # 400 for a Transfer-Encoding other than chunked too (h11 says 501): a smuggling shape, not a feature
                status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
                raise HttpError(status, f"malformed request: {str(exc)[:200]}") from None
            if isinstance(event, h11.Request):
                end = HEAD_END.search(raw)
                if end is not None and LENIENT.search(raw, 0, end.end()):
                    raise HttpError(400, "malformed request: a bare LF or a folded header line (obs-fold)")
                return event
            if event is not h11.NEED_DATA:
                return None  # closed between requests
            try:
                data = await asyncio.wait_for(reader.read(READ_BYTES), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise HttpError(408, f"the request's headers did not arrive within {wait:g} s") from None
            if not data:
                if bytes(raw).strip():
                    raise HttpError(400, "the request ended inside its headers")
                return None
            raw += data
            conn.receive_data(data)

    async def _body(self, conn: h11.Connection, reader, writer, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length is not None and int(length) > self._max_body:  # h11 checked that it is a number
            raise HttpError(413, f"request body of {length} bytes exceeds the limit of {self._max_body} bytes")
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        parts, total, idle = [], 0, self._limits.body_idle_s
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(400, f"malformed request body: {str(exc)[:200]}") from None
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > self._max_body:
                    raise HttpError(413, f"request body exceeds the limit of {self._max_body} bytes")
                parts.append(event.data)
                continue
            data = await _idle_bound(reader.read(READ_BYTES), idle)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)  # the client went away inside its body
            conn.receive_data(data)
        return await self._decoded(b"".join(parts), headers)

    async def _decoded(self, body: bytes, headers: dict[str, str]) -> bytes:
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding == "identity":
            return body
        if encoding not in DECODERS:
            raise HttpError(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate, identity)")
        async with self._inflating:  # off the loop (zlib lets go of the GIL), one at a time, at low CPU priority
            limit = min(self._max_body, self._inflated_limit(headers))
            return await asyncio.get_running_loop().run_in_executor(self._inflater, _inflate, body, encoding, limit)


def _lower_priority() -> None:
    """This thread at the lowest CPU priority (Linux schedules threads one by one): a stream of compressed bodies
    uses what the cores leave, not the time of the event loop and the batch workers."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: inflation is still one at a time


class _Reader(asyncio.StreamReader):
    """A StreamReader that says when its client hung up, so that the request it was waiting for can be cancelled
    (a queued inference is then dropped, not computed, as one over gRPC is). A client that only half-closes its
    side after a request is taken to have gone, as HTTP/1.1 clients do not do that while they wait."""

    hung_up = False
    on_hangup: Callable[[], object] | None = None

    def feed_eof(self) -> None:
        super().feed_eof()
        self._hang_up()

    def set_exception(self, exc) -> None:
        super().set_exception(exc)
        self._hang_up()

    def _hang_up(self) -> None:
        self.hung_up = True
        if self.on_hangup is not None:
            self.on_hangup()


async def _idle_bound(read, idle_s: float):
    """A body read that waits at most ``idle_s`` (a stalled body is 408, not held)."""
    try:
        return await asyncio.wait_for(read, idle_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the request body stalled: nothing arrived for {idle_s:g} s") from None


def _compressed(resp: Response, accept: str) -> Response:
    """gzip or deflate, when the client accepts it (q > 0) and the body is worth it."""
    if len(resp.body) < 256:
        return resp
    for token in accept.lower().split(","):
        coding, _, q = token.strip().partition(";")
        if coding in DECODERS and q.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            body = gzip.compress(resp.body, compresslevel=1) if coding == "gzip" else zlib.compress(resp.body, 1)
            return Response(resp.status, body, {**resp.headers, "Content-Encoding": coding})
    return resp


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, resp: Response, keep_alive: bool, head_only: bool = False
) -> None:
    """``resp`` framed by h11 (``keep_alive`` False: with Connection: close). ``head_only``: the answer to a HEAD
    request, which has the headers of the body but not the body."""
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = ""
    headers = [("Content-Length", str(len(resp.body))), *resp.headers.items()]
    if not keep_alive:
        headers.append(("Connection", "close"))
    try:
        data = conn.send(h11.Response(status_code=resp.status, headers=headers, reason=reason))
        if resp.body and not head_only:
            data += conn.send(h11.Data(data=resp.body))
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:  # the connection is past answering (h11's state machine says so)
        log.debug("HTTP: no answer possible in state %s", conn.states)
        return
    writer.write(data)
    await writer.drain()


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger_s: float = 1.0) -> None:
    """503 to a connection past the limit, then a short lingering close: what the client already sent is read and
    dropped for at most ``linger_s``, so that closing does not reset the connection before the 503 arrives."""
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    try:
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + linger_s
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if not await asyncio.wait_for(reader.read(65536), left):
                break
    except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def peer_name(addr) -> str:
    """The peer as gRPC names it, so that one check (shared memory's "is this client on this host?") serves both."""
    if isinstance(addr, tuple) and len(addr) == 4:
        return f"ipv6:[{addr[0]}]:{addr[1]}"
    if isinstance(addr, tuple):
        return f"ipv4:{addr[0]}:{addr[1]}"
    return f"unix:{addr or ''}"


def exposition(registry: CollectorRegistry) -> Handler:
    """``GET /metrics`` for fedge's own HTTP server (the metrics endpoint over TLS): the registry in Prometheus' text
    format, rendered off the event loop."""

    async def handle(req: Request) -> Response:
        if req.method not in ("GET", "HEAD") or req.path != "/metrics":
            return Response.error(404, "this endpoint serves GET /metrics only")
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return Response(200, body, {"Content-Type": CONTENT_TYPE_LATEST})

    return handle
