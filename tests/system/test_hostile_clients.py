"""Hostile HTTP and gRPC clients against a real ``fedge edge serve`` while a well-behaved client keeps inferring over
gRPC and HTTP: for each attack class, the well-behaved client's failures and latency (p50, p99) against its idle
figures, and the server's memory with 200 stalled connections. Figures go to tests/system/.last-run.json and
docs/RELIABILITY.md.

Attack classes (each from 127.0.0.1, bounded in count and time): slow clients (half request lines trickled a byte
at a time, bodies that stall), compression bombs, deep and huge JSON, path tricks on model names, oversized gRPC
metadata, and request-smuggling shapes (each must be answered 400 and the connection closed)."""

import gzip
import json
import multiprocessing
import socket
import statistics
import threading
import time

import grpc
import numpy as np
import psutil
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import serving

pytestmark = pytest.mark.system
PHASE_S = 3.0
X = np.zeros((1, 1, 8, 8), np.float32)
SMUGGLING = {
    "te_substring": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_list": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,"
    b" identity\r\n\r\n0\r\n\r\n",
    "cl_and_te": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:"
    b" chunked\r\n\r\n0\r\n\r\n",
    "space_before_colon": b"GET /v2/health/ready HTTP/1.1\r\nHost : x\r\n\r\n",
    "obs_fold": b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare_lf_in_value": b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\n\r\n",
    "negative_chunk": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
    "hex_prefix_chunk": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:"
    b" chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "underscore_chunk": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:"
    b" chunked\r\n\r\n0_2\r\n{}\r\n0\r\n\r\n",
    "long_chunk_line": b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;"
    + b"x" * 70_000,
    "non_ascii_length": "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n\r\n{}".encode(
        "latin-1"
    ),
}


class WellBehaved:
    """One client alternating a gRPC and an HTTP inference as fast as it is answered: latencies and failures."""

    def __init__(self, server) -> None:
        self.server, self.stop = server, threading.Event()
        self.samples: dict[str, list[float]] = {"grpc": [], "http": []}
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WellBehaved":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import http.client

        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(self.server.url))
        req = pb.ModelInferRequest(model_name="digits", raw_input_contents=[X.tobytes()])
        req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": X.ravel().tolist()}]}
        )
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
        while not self.stop.is_set():
            for kind in ("grpc", "http"):
                t0 = time.perf_counter()
                try:
                    if kind == "grpc":
                        stub.ModelInfer(req, timeout=30)
                    else:
                        conn.request("POST", "/v2/models/digits/infer", body, {"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"HTTP {resp.status}")
                except Exception as exc:
                    self.failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
                    conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
                    continue
                self.samples[kind].append(time.perf_counter() - t0)

    def figures(self) -> dict:
        out = {"failures": len(self.failures)}
        for kind, xs in self.samples.items():
            xs = sorted(xs)
            out[kind] = {
                "requests": len(xs),
                "p50_ms": round(statistics.median(xs) * 1e3, 3) if xs else None,
                "p99_ms": round(xs[int(0.99 * (len(xs) - 1))] * 1e3, 3) if xs else None,
            }
        return out


def _slowloris(port: int, n: int, stop: threading.Event) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v2/mod")
        socks.append(s)

    def trickle():
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"e")
                except OSError:
                    pass
            stop.wait(0.5)

    threading.Thread(target=trickle, daemon=True).start()
    return socks


def _stalled_bodies(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"{" * (256 << 10)
        )
        socks.append(s)
    return socks


def _send(port: int, raw: bytes, wait_s: float = 5.0) -> int | None:
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(raw)
        try:
            data = s.recv(4096)
        except OSError:
            return None
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


def _post_json(port: int, path: str, body: bytes) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read() or b"{}")
    finally:
        conn.close()


def _repeat(fn, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            fn()
        except Exception:
            pass


def attacker(name: str, port: int, grpc_url: str, stop) -> None:
    """One attack class, in a process of its own (so the well-behaved client's process is not slowed by it), until
    ``stop`` (a multiprocessing Event) is set."""
    local_stop, held = _attack(name, port, grpc_url)
    stop.wait(120)
    local_stop.set()
    for s in held:
        s.close()


def _attack(name: str, port: int, grpc_url: str) -> tuple[threading.Event, list]:
    stop, held = threading.Event(), []
    bomb = gzip.compress(b"[" + b"0," * (20 << 20) + b"0]", compresslevel=9)
    post = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    if name == "slowloris":
        held += _slowloris(port, 200, stop)
    elif name == "stalled_bodies":
        held += _stalled_bodies(port, 50)
    elif name == "compression_bombs":
        raw = post % len(bomb) + b"Content-Encoding: gzip\r\n\r\n" + bomb
        for _ in range(2):
            threading.Thread(target=_repeat, args=(lambda: _send(port, raw), stop), daemon=True).start()
    elif name == "deep_and_huge_json":
        for body in (b"[" * 50_000 + b"]" * 50_000, b'{"inputs": ' + b"9" * 10_000 + b"}"):
            raw = post % len(body) + b"\r\n" + body
            threading.Thread(target=_repeat, args=(lambda raw=raw: _send(port, raw), stop), daemon=True).start()
    elif name == "path_tricks":
        paths = [
            b"/v2/repository/models/../unload",
            b"/v2/repository/models/..%2F..%2Fetc/unload",
            b"/v2/models/digits%2Fconfig",
            b"/v2/models/%2E%2E/infer",
        ]
        raws = [b"POST " + p + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" for p in paths]
        threading.Thread(target=_repeat, args=(lambda: [_send(port, r) for r in raws], stop), daemon=True).start()
    elif name == "oversized_grpc_metadata":
        stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_url))
        big = (("x-junk", "y" * 60_000),)
        threading.Thread(
            target=_repeat,
            args=(lambda: stub.ServerReady(pb.ServerReadyRequest(), metadata=big, timeout=5), stop),
            daemon=True,
        ).start()
    elif name == "feedback_flood":  # corrections as fast as they are answered: matched, unknown, malformed
        digit = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": X.ravel().tolist()}]}
        ).encode()

        def matched() -> None:
            got = _post_json(port, "/v2/models/digits/infer", digit)
            _post_json(port, "/v2/models/digits/feedback", json.dumps({"id": got["id"], "label": "3"}).encode())

        for body in (b'{"id": "never-asked", "label": "3"}', b'{"id": "x", "label": "not a digit"}', b"{broken"):
            fn = lambda body=body: _post_json(port, "/v2/models/digits/feedback", body)
            threading.Thread(target=_repeat, args=(fn, stop), daemon=True).start()
        for _ in range(2):
            threading.Thread(target=_repeat, args=(matched, stop), daemon=True).start()
    elif name == "smuggling_shapes":
        threading.Thread(
            target=_repeat, args=(lambda: [_send(port, r, 1.0) for r in SMUGGLING.values()], stop), daemon=True
        ).start()
    return stop, held


CLASSES = [
    "slowloris",
    "stalled_bodies",
    "compression_bombs",
    "deep_and_huge_json",
    "path_tricks",
    "oversized_grpc_metadata",
    "smuggling_shapes",
    "feedback_flood",
]


def test_a_well_behaved_client_is_served_through_every_attack_class(tmp_path, keys, digits_bundle, report):
    store = tmp_path / "feedback"
    bounds = ("--feedback-store", str(store), "--max-kept-inputs", "2000", "--max-corrections", "1000")
    gen = serving(tmp_path, keys, [digits_bundle], "--http-header-timeout", "10", "--http-body-timeout", "30", *bounds)
    server = next(gen)
    figures, statuses = {}, {}
    try:
        proc = psutil.Process(server.proc.pid)
        with WellBehaved(server) as client:
            time.sleep(PHASE_S)
        figures["idle"] = client.figures()
        rss_idle = proc.memory_info().rss
        spawn = multiprocessing.get_context("spawn")
        for name in CLASSES:
            stop = spawn.Event()
            attack = spawn.Process(target=attacker, args=(name, server.http_port, server.url, stop), daemon=True)
            attack.start()
            try:
                time.sleep(1.5)  # the attacker process is up and attacking
                with WellBehaved(server) as client:
                    time.sleep(PHASE_S)
                figures[name] = client.figures()
                if name == "stalled_bodies":
                    figures[name]["rss_mb_over_idle"] = round((proc.memory_info().rss - rss_idle) / 2**20, 1)
                if name == "slowloris":
                    figures[name]["rss_mb_over_idle_200_stalled"] = round(
                        (proc.memory_info().rss - rss_idle) / 2**20, 1
                    )
            finally:
                stop.set()
                attack.join(30)
                if attack.is_alive():
                    attack.kill()
            assert client.failures == [], (name, client.failures[:5])
        statuses = {k: _send(server.http_port, raw, 2.0) for k, raw in SMUGGLING.items()}
        assert server.proc.poll() is None
    finally:
        next(gen, None)
    for name in CLASSES:
        for kind in ("grpc", "http"):
            base = figures["idle"][kind]["p99_ms"]
            figures[name][kind]["p99_vs_idle"] = round(figures[name][kind]["p99_ms"] / base, 2)
    report["hostile_clients"] = {"phase_s": PHASE_S, **figures, "smuggling_statuses": statuses}
    print(json.dumps(report["hostile_clients"], indent=1))
    assert figures["slowloris"]["rss_mb_over_idle_200_stalled"] < 200
    assert statuses == {k: 400 for k in SMUGGLING}, statuses
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    from fedge.edge_runtime.monitoring.feedback import FeedbackStore

    kept = FeedbackStore(store, keep_s=3600).counts()  # the flood stayed inside the store's caps
    assert kept["answers"] <= 2000 + 256 and kept["corrections"] <= 1000 + 256, kept
    report["hostile_clients"]["feedback_store"] = kept
