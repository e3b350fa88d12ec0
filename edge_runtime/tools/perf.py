"""``fedge edge perf``: what Triton's perf_analyzer measures, against any KServe v2 server (fedge's or Triton):
for each concurrency level, that many clients each keep one request outstanding (a closed loop, perf_analyzer's
default synchronous mode) for a warm-up, then for a measurement window; the window's requests/s, inferences/s
(rows), latency percentiles and failures, and the server's own queue and compute time per request from the
statistics extension (so client-side overhead can be told from the server's).

The request is built once and sent as is, over gRPC (``HOST:PORT``) or the REST endpoint with binary tensors
(``http://``, ``https://``, one keep-alive connection per client). Inputs come from ``--npy``/``--text`` or are
made from the model's metadata (uniform random numbers, a sample sentence for BYTES)."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import numpy as np
from google.protobuf import json_format

from fedge.edge_runtime.common.datatypes import BYTES, NUMPY
from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.edge_runtime.tools.grpc_client import infer_request
from fedge.edge_runtime.tools.rest_client import error_message, infer_body, model_path
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc

SAMPLE_TEXT = b"where is my order, it was due yesterday"


class PerfError(FedgeUserError):
    """The measurement cannot start (bad inputs for the model, metadata refused); the message says why."""


@dataclass
class Level:
    """One concurrency level's measurement window."""

    concurrency: int
    seconds: float
    requests: int
    rows: int
    failures: int
    first_failure: str
    latencies_ms: list[float]
    server_queue_us: float | None
    server_compute_us: float | None

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        p = lambda q: round(float(np.percentile(lat, q)), 3)
        return {
            "concurrency": self.concurrency,
            "requests_per_s": round(self.requests / self.seconds, 1),
            "inferences_per_s": round(self.requests * self.rows / self.seconds, 1),
            "requests": self.requests,
            "failures": self.failures,
            "p50_ms": p(50),
            "p90_ms": p(90),
            "p95_ms": p(95),
            "p99_ms": p(99),
            "server_queue_us": self.server_queue_us,
            "server_compute_us": self.server_compute_us,
            **({"first_failure": self.first_failure} if self.failures else {}),
        }


def make_inputs(
    meta: pb.ModelMetadataResponse, batch: int, npy: np.ndarray | None = None, texts: list[str] | None = None
) -> dict[str, np.ndarray]:
    """The request's tensors: ``npy`` or ``texts`` for a one-input model, else made from the metadata with the
    batch dimension (-1) set to ``batch``."""
    if npy is not None or texts:
        if len(meta.inputs) != 1:
            raise PerfError(
                f"--npy/--text give one input; model {meta.name!r} has {len(meta.inputs)}:"
                f" {[i.name for i in meta.inputs]}"
            )
        arr = npy if npy is not None else np.array([[t.encode()] for t in texts or []], dtype=np.object_)
        return {meta.inputs[0].name: arr}
    rng, out = np.random.default_rng(0), {}
    for t in meta.inputs:
        dims = list(t.shape)
        if dims and dims[0] == -1:
            dims[0] = batch
        if any(d < 0 for d in dims):
            raise PerfError(f"input {t.name!r} has a variable dimension {list(t.shape)}: give its data with --npy")
        if t.datatype == BYTES:
            out[t.name] = np.full(dims, SAMPLE_TEXT, dtype=object)
        elif t.datatype in NUMPY and t.datatype != "BOOL":
            out[t.name] = rng.uniform(0, 1, dims).astype(NUMPY[t.datatype])
        else:
            raise PerfError(f"input {t.name!r} is {t.datatype}: give its data with --npy")
    return out


class GrpcTarget:
    def __init__(self, url: str, tls: grpc.ChannelCredentials | None = None) -> None:
        opts = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
        self.channel = grpc.secure_channel(url, tls, opts) if tls else grpc.insecure_channel(url, opts)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def metadata(self, model: str, version: str) -> pb.ModelMetadataResponse:
        return self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), timeout=30)

    def statistics(self, model: str, version: str) -> pb.ModelStatisticsResponse:
        return self.stub.ModelStatistics(pb.ModelStatisticsRequest(name=model, version=version), timeout=30)

    def sender(self, model: str, version: str, inputs: dict[str, np.ndarray], timeout: float):
        """A function sending the prepared request once (raises on failure); one per client thread."""
        req, call = infer_request(model, inputs, version), self.stub.ModelInfer
        return lambda: call(req, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


class HttpTarget:
    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.https, self.host, self.port = parts.scheme == "https", parts.hostname, parts.port
        self.ssl = ssl_context or (ssl.create_default_context() if self.https else None)

    def _connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        host = self.host or "localhost"
        if self.https:
            return http.client.HTTPSConnection(host, self.port or 443, timeout=timeout, context=self.ssl)
        return http.client.HTTPConnection(host, self.port or 80, timeout=timeout)

    def _get(self, path: str, message):
        conn = self._connection()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise PerfError(f"{self.host}:{self.port}: {exc}") from exc
        finally:
            conn.close()
        if resp.status != 200:
            raise PerfError(f"HTTP {resp.status}: {error_message(body)}")
        return json_format.ParseDict(json.loads(body), message, ignore_unknown_fields=True)

    def metadata(self, model: str, version: str) -> pb.ModelMetadataResponse:
        return self._get(model_path(model, version), pb.ModelMetadataResponse())

    def statistics(self, model: str, version: str) -> pb.ModelStatisticsResponse:
        return self._get(model_path(model, version) + "/stats", pb.ModelStatisticsResponse())

    def sender(self, model: str, version: str, inputs: dict[str, np.ndarray], timeout: float):
        body, headers = infer_body(inputs)
        path = model_path(model, version) + "/infer"
        conn = [self._connection(timeout)]

        def send() -> None:
            try:
                conn[0].request("POST", path, body, headers)
                resp = conn[0].getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn[0].close()  # the next request dials again
                conn[0] = self._connection(timeout)
                raise
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {error_message(data)}")

        return send

    def close(self) -> None:
        pass


def _failure_text(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _served(stats: pb.ModelStatisticsResponse) -> tuple[int, int, int]:
    """(successful requests, their queue ns, their compute ns) summed over the versions in ``stats``."""
    n = queue = compute = 0
    for m in stats.model_stats:
        s = m.inference_stats
        n += s.success.count
        queue += s.queue.ns
        compute += s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns
    return n, queue, compute


def measure(
    target,
    model: str,
    version: str,
    inputs: dict[str, np.ndarray],
    concurrency: int,
    seconds: float,
    warmup: float,
    timeout: float = 30,
) -> Level:
    """``concurrency`` client threads, each sending the request again as soon as its answer came, for
    ``warmup`` + ``seconds``; what completed inside the window counts."""
    lock, stop = threading.Lock(), threading.Event()
    latencies: list[float] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    window = (t0 + warmup, t0 + warmup + seconds)

    def client(send) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                send()
                error = None
            except Exception as exc:
                error = _failure_text(exc)
            end = time.perf_counter()
            if window[0] <= start and end <= window[1]:
                with lock:
                    if error:
                        failures.append(error)
                    else:
                        latencies.append((end - start) * 1e3)
            if end > window[1]:
                return
            if error:
                time.sleep(0.01)  # a refusing server is not hammered in a tight loop

    before = _server_side(target, model, version)
    threads = [
        threading.Thread(target=client, args=(target.sender(model, version, inputs, timeout),), daemon=True)
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup + seconds + timeout + 5)
    stop.set()
    after = _server_side(target, model, version)
    queue_us = compute_us = None
    if before is not None and after is not None and after[0] > before[0]:
        served = after[0] - before[0]
        queue_us = round((after[1] - before[1]) / served / 1e3, 1)
        compute_us = round((after[2] - before[2]) / served / 1e3, 1)
    rows = len(next(iter(inputs.values())))
    return Level(
        concurrency,
        seconds,
        len(latencies),
        rows,
        len(failures),
        failures[0] if failures else "",
        latencies,
        queue_us,
        compute_us,
    )


def _server_side(target, model: str, version: str) -> tuple[int, int, int] | None:
    """The server's counters (None: it has no statistics extension or refused)."""
    try:
        return _served(target.statistics(model, version))
    except (grpc.RpcError, PerfError, OSError):
        return None


def table(levels: list[dict]) -> str:
    cols = [
        ("concurrency", "clients"),
        ("requests_per_s", "req/s"),
        ("inferences_per_s", "infer/s"),
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("p99_ms", "p99 ms"),
        ("failures", "failed"),
        ("server_queue_us", "server queue us"),
        ("server_compute_us", "server compute us"),
    ]
    rows = [[head for _, head in cols]] + [["-" if r[k] is None else str(r[k]) for k, _ in cols] for r in levels]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)
