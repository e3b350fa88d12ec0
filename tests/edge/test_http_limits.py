"""What a client may hold of the REST endpoint of a real ``fedge edge serve`` (short limits set by flags): headers
that never finish and bodies that stall are answered 408 and closed, past the connection limit a new connection
is answered 503 while gRPC goes on answering, a JSON body past its limit is 413 saying to send binary tensors, a
compression bomb stops at the message limit, and the process raised its open-files limit."""

import gzip
import json
import socket
import time

import grpc
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import serving

LIMITS = (
    "--http-header-timeout",
    "1",
    "--http-body-timeout",
    "1",
    "--http-keepalive-timeout",
    "30",
    "--http-max-connections",
    "4",
    "--max-message-bytes",
    str(8 << 20),
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory, keys, digits_bundle):
    gen = serving(tmp_path_factory.mktemp("limited"), keys, [digits_bundle], *LIMITS)
    yield next(gen)
    next(gen, None)


def _answer(sock: socket.socket, timeout: float = 5.0) -> tuple[int | None, float]:
    """(status of what the server sent before closing, or None for nothing; seconds it took)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    status = int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, time.monotonic() - started


def _grpc_live(server) -> bool:
    with grpc.insecure_channel(server.url) as ch:
        return pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=5).live


@pytest.mark.parametrize(
    "sent",
    [b"POST /v2/mod", b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"],
    ids=["half-request-line", "headers-never-end"],
)
def test_headers_that_never_finish_are_answered_408_and_closed(limited, sent):
    with socket.create_connection(("127.0.0.1", limited.http_port)) as s:
        s.sendall(sent)
        assert _grpc_live(limited)  # meanwhile
        status, took = _answer(s)
    assert status == 408 and took < 4


def test_a_stalled_body_is_answered_408_and_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.http_port)) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"{" * 99)
        status, took = _answer(s)
    assert status == 408 and took < 4


def test_past_the_connection_limit_new_connections_get_503_and_grpc_still_answers(limited):
    held = [socket.create_connection(("127.0.0.1", limited.http_port)) for _ in range(4)]
    try:
        for s in held:  # each has begun a request: the server holds it until the header timeout
            s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", limited.http_port)) as extra:
            extra.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(extra)[0] == 503
        assert _grpc_live(limited)
    finally:
        for s in held:
            s.close()
    time.sleep(1.5)  # the held ones are gone: a new connection is served again
    with socket.create_connection(("127.0.0.1", limited.http_port)) as s:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(s)[0] == 200


def _post(port: int, body: bytes, *headers: str) -> tuple[int, dict]:
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}", "Connection: close"))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        s.settimeout(30)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload) if payload else {}


def test_json_past_its_limit_is_413_saying_to_send_binary_tensors(limited):
    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5] * 64, "pad": "x" * (5 << 20)}
            ]
        }
    ).encode()
    status, doc = _post(limited.http_port, body)
    assert status == 413 and "binary" in doc["error"], doc


def test_a_compression_bomb_stops_at_the_message_limit(limited):
    bomb = gzip.compress(b"[" + b"0," * (20 << 20) + b"0]", compresslevel=9)  # 40 MB of JSON in about 40 KB
    assert len(bomb) < 200_000
    started = time.monotonic()
    status, doc = _post(limited.http_port, bomb, "Content-Encoding: gzip")
    assert status == 413 and "decompressed" in doc["error"] and time.monotonic() - started < 5
    assert _grpc_live(limited)


def test_the_server_raised_its_open_files_limit(limited):
    assert "open files limit" in limited.log.read_text()
