"""The KServe v2 REST endpoint of a real ``fedge edge serve`` (Triton's HTTP protocol): tritonclient.http unchanged,
and the HTTP framing and error paths driven byte by byte over a socket."""

import http.client
import json
import re
import socket
import time
import urllib.request

import numpy as np
import pytest

from tests.edge.bundles import reference_logits
from tests.edge.conftest import triton_script


def test_tritonclient_http_works_unchanged(edge_server, digits_bundle, tmp_path):
    x = np.random.default_rng(3).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = triton_script("tests.edge.triton_http_check", edge_server.http_url, str(tmp_path / "x.npy"))
    assert r["live"] and r["ready"] and r["digits_ready"] and r["ready_after"] and r["missing_ready"] is False
    assert r["server"]["name"] == "fedge-edge" and {"model_repository", "binary_tensor_data"} <= set(
        r["server"]["extensions"]
    )
    # JSON as Triton's HTTP endpoint writes it: 64-bit integers are numbers, not protobuf's JSON strings
    assert r["metadata"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert r["config"]["max_batch_size"] == 64 and r["config"]["input"][0]["dims"] == [1, 8, 8]
    assert r["config"]["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert sorted(m["name"] for m in r["index"]) == ["digits", "intent"]

    expected = reference_logits(digits_bundle, x)
    for form in ("binary", "json", "compressed", "async"):  # binary tensors, JSON data, gzip/deflate, 8 at once
        np.testing.assert_allclose(np.array(r[form]), expected, rtol=1e-5, atol=1e-6, err_msg=form)
    assert r["json_response"]["id"] == "j1" and "data" in r["json_response"]["outputs"][0]
    labels = json.loads((digits_bundle / "manifest.json").read_text())["labels"]
    for row, top in zip(expected, r["top3"]):
        assert [t.split(":", 1)[1] for t in top] == [f"{i}:{labels[i]}" for i in np.argsort(-row)[:3]]
    assert r["labels"]["True"] == r["labels"]["False"] and len(r["labels"]["True"]) == 2

    stats = r["stats"]
    assert stats["inference_count"] >= 3 * 5 and stats["inference_stats"]["success"]["count"] >= 5
    assert r["trace"]["trace_rate"] == "7" and r["trace_cleared"]["trace_rate"] == "1000"
    assert r["log"]["log_verbose_level"] == 1
    assert (r["reloaded_max_batch"], r["restored_max_batch"]) == (8, 64)
    statuses = {name: e["status"] for name, e in r["errors"].items()}
    assert statuses == {
        "datatype": "400",
        "unknown_model": "404",
        "unknown_version": "404",
        "over_max_batch": "400",
        "file_upload": "400",
        "shared_memory": "403",
    }
    assert "expected FP32" in r["errors"]["datatype"]["message"]


def _exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send raw bytes, read one response: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return _read_response(s.makefile("rb"))


def _read_response(f) -> tuple[int, dict, bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while line := f.readline().decode().strip():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers.get("content-length", 0)))


def _infer_json(x: np.ndarray) -> dict:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}],
        "outputs": [{"name": "logits"}],
    }


def test_json_inference_keep_alive_chunked_and_expect_continue(edge_server, digits_bundle):
    x = np.random.default_rng(4).random((2, 1, 8, 8), dtype=np.float32)
    expected = reference_logits(digits_bundle, x)
    body = json.dumps(_infer_json(x)).encode()
    conn = http.client.HTTPConnection("127.0.0.1", edge_server.http_port, timeout=10)
    answers = []
    for _ in range(2):  # one connection, two requests (HTTP/1.1 keep-alive)
        conn.request("POST", "/v2/models/digits/infer", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        answers.append(json.loads(resp.read()))
        sock = conn.sock
    assert conn.sock is sock is not None
    for doc in answers:
        out = doc["outputs"][0]
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), expected, rtol=1e-5, atol=1e-6)
    conn.close()

    half = len(body) // 2  # a chunked body, in two chunks
    chunked = (
        f"{half:x}\r\n".encode()
        + body[:half]
        + f"\r\n{len(body) - half:x}\r\n".encode()
        + body[half:]
        + b"\r\n0\r\n\r\n"
    )
    status, _, out = _exchange(
        edge_server.http_port,
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
    )
    assert status == 200 and np.allclose(json.loads(out)["outputs"][0]["data"], expected.reshape(-1), atol=1e-6)

    with socket.create_connection(("127.0.0.1", edge_server.http_port), timeout=10) as s:  # what curl does
        s.sendall(
            f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 100") and f.readline() == b"\r\n"
        s.sendall(body)
        status, _, out = _read_response(f)
    assert status == 200 and len(json.loads(out)["outputs"][0]["data"]) == 20


def _post(path: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body


IMAGE = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8]}
BINARY_HEAD = json.dumps({"inputs": [{**IMAGE, "parameters": {"binary_data_size": 256}}]}).encode()
BAD = {  # raw request -> (status, words the error must contain)
    "not_json": (_post("/v2/models/digits/infer", b"{nope"), 400, "not valid JSON"),
    "binary_past_end": (
        _post(
            "/v2/models/digits/infer", BINARY_HEAD + bytes(100), f"Inference-Header-Content-Length: {len(BINARY_HEAD)}"
        ),
        400,
        "binary_data_size",
    ),
    "header_past_end": (
        _post("/v2/models/digits/infer", b"{}", "Inference-Header-Content-Length: 99"),
        400,
        "Inference-Header-Content-Length",
    ),
    "ints_for_strings": (
        _post(
            "/v2/models/intent/infer",
            json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [7]}]}).encode(),
        ),
        400,
        "must be strings",
    ),
    "floats_for_ints": (
        _post(
            "/v2/models/digits/infer",
            json.dumps({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 1], "data": [1.5]}]}).encode(),
        ),
        400,
        "integers",
    ),
    "wrong_count": (
        _post("/v2/models/digits/infer", json.dumps({"inputs": [{**IMAGE, "data": [1.5]}]}).encode()),
        400,
        "expected 256",
    ),
    "two_sources": (
        _post(
            "/v2/models/digits/infer",
            json.dumps(
                {
                    "inputs": [
                        {
                            **IMAGE,
                            "data": [0.0] * 64,
                            "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 256},
                        }
                    ]
                }
            ).encode(),
        ),
        400,
        "exactly one way",
    ),
    "id_not_a_string": (
        _post("/v2/models/digits/infer", json.dumps({"id": 5, "inputs": [{**IMAGE, "data": [0.0] * 64}]}).encode()),
        400,
        "id must be a string",
    ),
    "unknown_model": (b"GET /v2/models/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown model"),
    "unknown_path": (b"GET /v3/whatever HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no KServe v2 endpoint"),
    "wrong_method": (b"DELETE /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", 405, "DELETE is not allowed"),
    "load_float_parameter": (
        _post("/v2/repository/models/digits/load", b'{"parameters": {"config": 1.5}}'),
        400,
        "must be a boolean, an integer or a string",
    ),
    "over_limit": (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
        413,
        "exceeds",
    ),
    "bad_gzip": (_post("/v2/models/digits/infer", b"oops", "Content-Encoding: gzip"), 400, "corrupt"),
    "bad_request_line": (b"HELLO\r\n\r\n", 400, "illegal request line"),
    "http2_preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP/1.1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_http_requests_get_the_right_status_and_the_server_stays_ready(edge_server, case):
    raw, want, words = BAD[case]
    status, _headers, body = _exchange(edge_server.http_port, raw)
    assert status == want, body
    assert words in json.loads(body)["error"], body
    assert _exchange(edge_server.http_port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_http_failures_are_counted_in_the_metrics_like_grpc_ones(edge_server):
    def invalid() -> float:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{edge_server.metrics_port}/metrics", timeout=10).read().decode()
        )
        rows = [
            line
            for line in text.splitlines()
            if line.startswith("fedge_edge_requests_total{")
            and 'model="digits"' in line
            and 'status="INVALID_ARGUMENT"' in line
        ]
        return sum(float(r.rsplit(" ", 1)[1]) for r in rows)

    before = invalid()
    for _ in range(3):
        assert _exchange(edge_server.http_port, BAD["wrong_count"][0])[0] == 400
    assert invalid() == before + 3


@pytest.mark.parametrize(
    "datatype, data, expected",
    [
        ("FP32", [[1, 2.5], [3, 4]], np.array([1, 2.5, 3, 4], np.float32)),
        ("INT64", [[-3], [2**40]], np.array([-3, 2**40], np.int64)),
        ("UINT8", [0, 255], np.array([0, 255], np.uint8)),
        ("BOOL", [True, False], np.array([True, False])),
        ("FP16", [0.5], np.array([0.5], np.float16)),
    ],
)
def test_json_data_becomes_the_raw_bytes_tritonclient_would_send(datatype, data, expected):
    from fedge.edge_runtime.frontends.rest_codec import json_tensor

    assert json_tensor("x", datatype, data) == expected.tobytes()


@pytest.mark.parametrize(
    "datatype, data, words",
    [
        ("UINT8", [256], "does not fit UINT8"),
        ("INT8", [-129], "does not fit INT8"),
        ("INT32", [1.5], "must be integers"),
        ("BOOL", [1], "must be true/false"),
        ("FP32", [[1, 2], [3]], "regular"),
        ("FP32", ["1"], "must be numbers"),
        ("BF16", [1.0], "binary"),
    ],
)
def test_json_data_of_the_wrong_kind_is_refused_not_converted(datatype, data, words):
    from fedge.edge_runtime.common.errors import InvalidInput
    from fedge.edge_runtime.frontends.rest_codec import json_tensor

    with pytest.raises(InvalidInput, match=words):
        json_tensor("x", datatype, data)


def test_fedge_edge_predict_over_http_answers_as_over_grpc(edge_server, tmp_path):
    from tests.edge.conftest import edge_cli

    x = np.random.default_rng(6).random((2, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    base = ("edge", "predict", "--model", "digits", "--npy", str(tmp_path / "x.npy"))
    over_grpc, over_http = (
        edge_cli(edge_server, *base, "--url", url) for url in (edge_server.url, f"http://{edge_server.http_url}")
    )
    assert over_grpc.returncode == 0 and over_http.returncode == 0, over_http.stderr
    assert json.loads(over_http.stdout) == json.loads(over_grpc.stdout)  # logits and labels, to the bit
    top = edge_cli(
        edge_server,
        "edge",
        "predict",
        "--url",
        f"http://{edge_server.http_url}",
        "--model",
        "intent",
        "--text",
        "I lost my card",
        "--top",
        "2",
    )
    assert top.returncode == 0, top.stderr
    (row,) = json.loads(top.stdout)["logits"]
    assert len(row) == 2 and float(row[0].split(":")[0]) >= float(row[1].split(":")[0])
    missing = edge_cli(
        edge_server, "edge", "predict", "--url", f"http://{edge_server.http_url}", "--model", "nope", "--text", "hi"
    )
    assert missing.returncode == 2 and missing.stderr.strip() == "fedge edge predict: HTTP 404: unknown model 'nope'"


@pytest.fixture
def slow_server(tmp_path, keys, digits_bundle):
    from tests.edge.conftest import slowed_server

    yield from slowed_server(tmp_path, keys, digits_bundle)


def test_http_and_grpc_requests_share_one_batch(slow_server):
    """One data plane: requests that arrive over both protocols while the model is busy run as one backend call."""
    import threading

    import grpc

    from fedge.proto import grpc_service_pb2_grpc as pb_grpc
    from tests.edge.conftest import digits_request

    server, computed = slow_server
    raw = _post("/v2/models/digits/infer", json.dumps({"inputs": [{**IMAGE, "data": [0.0] * 64}]}).encode())
    statuses = []
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        busy = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)  # the model is now busy with it for 300 ms
        over_http = [
            threading.Thread(target=lambda: statuses.append(_exchange(server.http_port, raw)[0])) for _ in range(2)
        ]
        for t in over_http:
            t.start()
        over_grpc = [stub.ModelInfer.future(digits_request(), timeout=10) for _ in range(2)]
        for t in over_http:
            t.join(10)
        assert busy.result().outputs and all(f.result().outputs for f in over_grpc)
    assert statuses == [200, 200]
    assert computed == [1, 4], computed


def test_verbose_logging_writes_an_access_log_for_both_protocols(edge_server, stub):
    from tests.edge.conftest import digits_request

    def logging_(level: int) -> int:
        body = json.dumps({"log_verbose_level": level}).encode()
        return _exchange(edge_server.http_port, _post("/v2/logging", body))[0]

    def logged_by_two_requests() -> str:
        before = len(edge_server.log.read_text())
        assert _exchange(edge_server.http_port, BAD["wrong_count"][0])[0] == 400
        stub.ModelInfer(digits_request(), timeout=10)
        time.sleep(0.3)
        return edge_server.log.read_text()[before:]

    assert logging_(1) == 200
    try:
        text = logged_by_two_requests()
        assert re.search(
            r"DEBUG fedge.edge: HTTP POST /v2/models/digits/infer -> 400 in [\d.]+ ms \(ipv4:127.0.0.1:\d+\)", text
        ), text
        assert re.search(r"DEBUG fedge.edge: gRPC ModelInfer -> OK in [\d.]+ ms \(ipv4:127.0.0.1:\d+\)", text), text
    finally:
        assert logging_(0) == 200
    assert "fedge.edge: HTTP" not in logged_by_two_requests() and "gRPC ModelInfer" not in logged_by_two_requests()
