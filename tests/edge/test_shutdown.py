"""Stopping `fedge edge serve` (SIGTERM/SIGINT), as Triton does: no new connections or requests, every request in
flight answered (queued ones included, over gRPC, HTTP and streams), then exit 0; within --exit-timeout-secs at
most; a second signal exits at once. A real server process serving a heavy stand-in model (each request of 64
rows is one backend call of about a quarter second, and they cannot share a batch; one batch worker, so the calls
queue), stopped by PID."""

import http.client
import json
import os
import queue
import signal
import threading
import time

import grpc
import numpy as np

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from fedge.proto import health_pb2, health_pb2_grpc
from tests.edge.bundles import reference_logits
from tests.edge.conftest import serving

ROWS = 64  # the model's max_batch_size: every request is a backend call of its own


def _grpc_request(x: np.ndarray, rid: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="digits", id=rid, raw_input_contents=[x.tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    return req


def _grpc_logits(resp: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(-1, 10)


def _http_infer(port: int, x: np.ndarray) -> np.ndarray:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    conn.request("POST", "/v2/models/digits/infer", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, doc
    return np.asarray(doc["outputs"][0]["data"], np.float32).reshape(-1, 10)


class Load:
    """Requests sent at once from threads (gRPC unary, HTTP, and one stream left open by its client); each
    outcome and when it came."""

    def __init__(self, server, batches: list[np.ndarray]) -> None:
        self.outcomes: dict[str, tuple[str, object, float]] = {}
        self.stream_requests: queue.Queue = queue.Queue()
        self._channel = grpc.insecure_channel(server.url)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        kinds = ["grpc", "http", "stream", "grpc", "http", "grpc"]
        self._threads = [
            threading.Thread(target=self._one, args=(server, kind, f"{kind}{i}", x), daemon=True)
            for i, (kind, x) in enumerate(zip(kinds, batches))
        ]
        for t in self._threads:
            t.start()

    def _one(self, server, kind: str, name: str, x: np.ndarray) -> None:
        try:
            if kind == "grpc":
                got = _grpc_logits(self._stub.ModelInfer(_grpc_request(x, name), timeout=60))
            elif kind == "http":
                got = _http_infer(server.http_port, x)
            else:
                self._stream(name, x)
                return
            self.outcomes[name] = ("ok", got, time.monotonic())
        except Exception as exc:
            self.outcomes[name] = ("error", exc, time.monotonic())

    def _stream(self, name: str, x: np.ndarray) -> None:
        def requests():
            yield _grpc_request(x, name)
            self.stream_requests.get()  # the client keeps its side open until the test ends

        answers = []
        try:
            for resp in self._stub.ModelStreamInfer(requests(), timeout=60):
                answers.append(resp)
            self.outcomes[name] = ("ended", answers, time.monotonic())
        except grpc.RpcError as exc:
            self.outcomes[name] = ("ok", (answers, exc), time.monotonic())

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)
        self.stream_requests.put(None)
        self._channel.close()


def _refused(server) -> tuple[grpc.StatusCode, str]:
    """What a new client gets now: the gRPC status of ServerLive on a new channel, and an HTTP connect's error."""
    with grpc.insecure_channel(server.url) as ch:
        try:
            pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=3)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
    try:
        http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=3).connect()
        http_error = ""
    except OSError as exc:
        http_error = type(exc).__name__
    return code, http_error


def _batches(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((ROWS, 1, 8, 8)).astype(np.float32) for _ in range(n)]


def test_sigterm_answers_every_request_in_flight_refuses_new_ones_and_exits_0(tmp_path, keys, heavy):
    gen = serving(tmp_path, keys, [heavy], "--exit-timeout-secs", "30", "--instances", "1")
    server = next(gen)
    try:
        batches = _batches(6)
        with grpc.insecure_channel(server.url) as ch:  # one call first: the model is warm, and its cost known
            t0 = time.monotonic()
            pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_grpc_request(batches[0], "warm"), timeout=60)
            one_call = time.monotonic() - t0
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            load = Load(server, batches)
            time.sleep(0.5)  # every request has reached the server; about 6 calls' work is queued
            os.kill(server.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            time.sleep(0.3)
            refused = _refused(server)
            still_running = server.proc.poll() is None
            watched = [r.status for r in watch]  # the Watch says NOT_SERVING and ends
        load.join(60)
        server.proc.wait(30)
        exited = time.monotonic() - stopped_at
    finally:
        next(gen, None)  # stop_pid; the server must be gone

    print(
        f"one call {one_call:.2f} s; exited {exited:.2f} s after SIGTERM; outcomes "
        + ", ".join(f"{k}: {v[0]} at +{v[2] - stopped_at:.2f} s" for k, v in sorted(load.outcomes.items()))
    )
    assert still_running, "the server was gone 0.3 s after SIGTERM: nothing was in flight, the test proves nothing"
    assert refused[0] == grpc.StatusCode.UNAVAILABLE and refused[1] == "ConnectionRefusedError", refused
    assert watched == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert server.proc.returncode == 0
    log = server.log.read_text()
    assert "stopped: every request in flight was answered" in log, log[-2000:]
    assert exited < 20, "the server waited for the exit timeout instead of the last answer"
    assert len(load.outcomes) == 6
    answered_late = [k for k, v in load.outcomes.items() if v[2] > stopped_at + 0.3]
    assert answered_late, "every request was answered before SIGTERM: the drain was not exercised"
    for i, (name, (status, value, _)) in enumerate(sorted(load.outcomes.items(), key=lambda kv: int(kv[0][-1]))):
        if name.startswith("stream"):
            answers, exc = value  # its one request answered, then the stream ended by the stopping server
            assert status == "ok" and exc.code() == grpc.StatusCode.UNAVAILABLE and "stopping" in exc.details()
            assert len(answers) == 1 and not answers[0].error_message
            got = _grpc_logits(answers[0].infer_response)
        else:
            assert status == "ok", (name, value)
            got = value
        np.testing.assert_allclose(got, reference_logits(heavy, batches[i]), rtol=1e-3, atol=1e-4)


def test_exit_timeout_cuts_off_what_is_left_and_a_second_signal_exits_at_once(tmp_path, keys, heavy):
    gen = serving(tmp_path, keys, [heavy], "--exit-timeout-secs", "1", "--instances", "1")
    server = next(gen)
    try:
        load = Load(server, _batches(6))  # about 1.5 s of work, more than the 1 s exit timeout
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        server.proc.wait(20)
        exited = time.monotonic() - stopped_at
        load.join(30)
    finally:
        next(gen, None)  # stop_pid; the server must be gone
    assert server.proc.returncode == 0
    assert 0.9 < exited < 10, exited
    assert "stopped: the exit timeout of 1 s passed" in server.log.read_text()
    failed = [v[1] for v in load.outcomes.values() if v[0] == "error"]
    assert failed and len(load.outcomes) == 6, load.outcomes  # cut off with an error: no client hangs

    gen = serving(tmp_path / "again", keys, [heavy], "--exit-timeout-secs", "30", "--instances", "1")
    server = next(gen)
    try:
        load = Load(server, _batches(6))
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGTERM)
        time.sleep(0.2)
        stopped_at = time.monotonic()
        os.kill(server.pid, signal.SIGINT)
        server.proc.wait(20)
        exited = time.monotonic() - stopped_at
        load.join(30)
    finally:
        next(gen, None)  # stop_pid; the server must be gone
    assert server.proc.returncode == 128 + signal.SIGINT and exited < 1.0, (server.proc.returncode, exited)
    assert "SIGINT while stopping: exiting without waiting" in server.log.read_text()
