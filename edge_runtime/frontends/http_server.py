"""A small HTTP/1.1 server on asyncio streams, for the KServe v2 REST endpoint (frontends.rest): the edge's
dependencies hold no web framework, and this endpoint needs only a little of HTTP. Keep-alive, Content-Length and
chunked bodies, ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB), gzip/deflate request bodies and
responses (what tritonclient.http's compression options send and accept), a body limit (413 before the body is
read), TLS, and requests whose client hung up are cancelled. It runs on the gRPC server's event loop, so HTTP and
gRPC requests are batched together."""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import ssl
import time
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("fedge.edge")
MAX_HEAD_BYTES = 64 << 10  # request line and headers
DECODERS = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "deflate": lambda: zlib.decompressobj()}
INFLATING_AT_ONCE = 1  # compressed request bodies inflated at once (one core at most, on a 2-core device); more wait
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods and header names
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _headers(lines: list[str]) -> dict[str, str]:
    """Header lines as RFC 9112 has them, strictly: a token, a colon right after it, no line folding (obs-fold),
    no bare CR or LF inside; a repeated Content-Length must repeat the same value. Lower-case names; repeated
    headers joined with commas."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.fullmatch(name) or "\r" in line or "\n" in line:
            raise HttpError(400, f"malformed header line {line[:200]!r}")
        name, value = name.lower(), value.strip(" \t")
        if name == "content-length" and name in headers and headers[name] != value:
            raise HttpError(400, "differing Content-Length headers")
        if name in headers and name != "content-length":
            value = f"{headers[name]}, {value}"
        headers[name] = value
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
    path: str                       # percent-decoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]         # lower-case names
    body: bytes
    peer: str                       # as gRPC writes it: "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"
    raw_path: str = ""              # as sent, not percent-decoded: routes match on it (an encoded '/' stays in a name)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, doc, status: int = 200) -> "Response":
        return cls(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    @classmethod
    def error(cls, status: int, message: str) -> "Response":
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
    header_timeout_s: float = 10.0     # from a request's first byte to the end of its headers (and, on a new
                                       # connection, from connecting to that first byte)
    body_idle_s: float = 30.0          # longest silence while a request body arrives
    keepalive_s: float = 75.0          # an idle keep-alive connection is closed after this long
    max_connections: int = 1024        # open HTTP connections; one more is answered 503 and closed

    def __post_init__(self) -> None:
        if min(self.header_timeout_s, self.body_idle_s, self.keepalive_s) <= 0 or self.max_connections < 1:
            raise ValueError("HTTP timeouts must be > 0 s and the connection limit >= 1")


class HttpServer:
    def __init__(self, handle: Handler, max_body_bytes: int, tls: ssl.SSLContext | None = None,
                 limits: HttpLimits = HttpLimits(), inflated_limit: Callable[[dict[str, str]], int] | None = None
                 ) -> None:
        """``inflated_limit(headers)``: how far a compressed body with these headers may inflate (default: the body
        limit), so that an application whose bodies are small (JSON) stops a compression bomb there."""
        self._handle, self._max_body, self._tls, self._limits = handle, max_body_bytes, tls, limits
        self._inflated_limit = inflated_limit or (lambda headers: max_body_bytes)
        self._inflating = asyncio.Semaphore(INFLATING_AT_ONCE)
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

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._limits.max_connections:  # refused at once; gRPC is another port
            await _refuse(reader, writer)
            return
        self._connections.add(task := asyncio.current_task())
        try:
            peer = peer_name(writer.get_extra_info("peername"))
            idle = self._limits.header_timeout_s  # a new connection's first byte is part of its first request
            while True:
                try:
                    req, keep_alive = await self._read(reader, writer, peer, idle)
                    idle = self._limits.keepalive_s
                except HttpError as exc:
                    await _send(writer, Response.error(exc.status, str(exc)), False)
                    return
                except (ValueError, asyncio.LimitOverrunError) as exc:  # framing no check above foresaw: the client's
                    await _send(writer, Response.error(400, f"malformed request: {str(exc)[:200]}"), False)
                    return
                if req is None:
                    return
                started = time.perf_counter()
                handler = asyncio.ensure_future(self._handle(req))
                reader.on_hangup = handler.cancel  # a client that hung up is not answered, nor computed for
                try:
                    resp = await handler
                except asyncio.CancelledError:
                    if reader.hung_up:
                        return
                    raise
                except Exception as exc:  # a bug, not the client's fault: answer 500, keep serving
                    log.exception("%s %s failed", req.method, req.path)
                    resp = Response.error(500, f"{type(exc).__name__}: {exc}")
                finally:
                    reader.on_hangup = None
                keep_alive = keep_alive and not self._draining  # a stopping server closes after each answer
                await _send(writer, _compressed(resp, req.headers.get("accept-encoding", "")), keep_alive,
                            head_only=req.method == "HEAD")
                self._idle(task)
                if log.isEnabledFor(logging.DEBUG):  # the access log, at log_verbose_level >= 1
                    log.debug("HTTP %s %s -> %d in %.2f ms (%s)", req.method, req.path, resp.status,
                              (time.perf_counter() - started) * 1e3, peer)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            self._idle(task)
            writer.close()

    def _idle(self, task: asyncio.Task) -> None:
        self._busy.discard(task)
        if self._draining and not self._busy:
            self._drained.set()

    async def _read(self, reader, writer, peer: str, idle: float) -> tuple[Request | None, bool]:
        """The next request: its first byte within ``idle`` seconds (else the connection is closed without a
        word), then its headers within the header timeout (a client that sends half a request line and then a
        byte now and then holds a connection that long, no longer: 408)."""
        wait = self._limits.header_timeout_s
        try:
            first = await asyncio.wait_for(reader.readexactly(1), idle)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            return None, False  # idle, or closed between requests
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
            self._busy.add(asyncio.current_task())  # a request has come: a stopping server answers it
        except asyncio.TimeoutError:
            raise HttpError(408, f"the request's headers did not arrive within {wait:g} s") from None
        except asyncio.IncompleteReadError as exc:
            if (first + exc.partial).strip():
                raise HttpError(400, "the request ended inside its headers") from None
            return None, False  # closed between requests
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HttpError(400, f"malformed request line {lines[0][:200]!r}") from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, f"{version[:20]} is not served here; use HTTP/1.1")
        if not TOKEN.fullmatch(method) or "\n" in target:
            raise HttpError(400, f"malformed request line {lines[0][:200]!r}")
        headers = _headers(lines[1:-2])
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        body = await self._body(reader, writer, headers)
        url = urlsplit(target)
        return Request(method, unquote(url.path), parse_qs(url.query), headers, body, peer, url.path), keep_alive

    async def _body(self, reader, writer, headers: dict[str, str]) -> bytes:
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if coding is not None and length is not None:  # RFC 9112 6.1: the shape of request smuggling
            raise HttpError(400, "a request with both Transfer-Encoding and Content-Length is refused")
        if coding is not None and coding.lower() != "chunked":
            raise HttpError(400, f"Transfer-Encoding {coding[:40]!r} is not served here (only chunked)")
        chunked = coding is not None
        if not chunked and length is None:
            return b""
        if not chunked and not (length.isascii() and length.isdigit() and len(length) <= 18):
            raise HttpError(400, f"Content-Length {length[:40]!r} is not a byte count")
        if not chunked and int(length) > self._max_body:
            raise HttpError(413, f"request body of {length} bytes exceeds the limit of {self._max_body} bytes")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        idle = self._limits.body_idle_s
        body = await (_chunks(reader, self._max_body, idle) if chunked else _exactly(reader, int(length), idle))
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding == "identity":
            return body
        if encoding not in DECODERS:
            raise HttpError(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate, identity)")
        async with self._inflating:  # off the loop (zlib lets go of the GIL), a bounded number at a time
            limit = min(self._max_body, self._inflated_limit(headers))
            return await asyncio.get_running_loop().run_in_executor(None, _inflate, body, encoding, limit)


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


async def _exactly(reader: asyncio.StreamReader, n: int, idle_s: float) -> bytes:
    """``n`` bytes of a body, each piece within ``idle_s`` of the one before (a stalled body is 408, not held)."""
    parts, left = [], n
    while left:
        piece = await _idle_bound(reader.read(min(left, 1 << 20)), idle_s)
        if not piece:
            raise asyncio.IncompleteReadError(b"".join(parts), n)
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


async def _idle_bound(read, idle_s: float):
    try:
        return await asyncio.wait_for(read, idle_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the request body stalled: nothing arrived for {idle_s:g} s") from None


async def _chunks(reader: asyncio.StreamReader, limit: int, idle_s: float) -> bytes:
    parts, total = [], 0
    while True:
        try:
            line = await _idle_bound(reader.readuntil(b"\r\n"), idle_s)
        except asyncio.LimitOverrunError:
            raise HttpError(400, "a chunk-size line of the chunked body is too long") from None
        size_text = line[:-2].split(b";", 1)[0]
        if not CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(400, "malformed chunk size in a chunked body") from None
        size = int(size_text, 16)
        if size == 0:
            while (await _idle_bound(reader.readuntil(b"\r\n"), idle_s)) != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            raise HttpError(413, f"request body exceeds the limit of {limit} bytes")
        parts.append(await _exactly(reader, size, idle_s))
        if await _idle_bound(reader.readexactly(2), idle_s) != b"\r\n":
            raise HttpError(400, "a chunk of the chunked body is longer than its size says")


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


async def _send(writer: asyncio.StreamWriter, resp: Response, keep_alive: bool, head_only: bool = False) -> None:
    """``head_only``: the answer to a HEAD request, which has the headers of the body but not the body."""
    try:
        reason = HTTPStatus(resp.status).phrase
    except ValueError:
        reason = ""
    head = [f"HTTP/1.1 {resp.status} {reason}", f"Content-Length: {len(resp.body)}"]
    head += [f"{k}: {v}" for k, v in resp.headers.items()]
    if not keep_alive:
        head.append("Connection: close")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(resp.body)
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
