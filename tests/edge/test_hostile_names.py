"""Names and values a hostile client sends, against a real ``fedge edge serve``: every path that takes a model name
checks it (INVALID_ARGUMENT / 400 whether or not anything of that name is on disk: no oracle for which directories
exist), an encoded '/' stays inside the name it was sent in, and error messages quoting client input are cut so
that the real status always reaches the client (gRPC's metadata limit is 16 KiB)."""

import http.client
import json

import grpc
import numpy as np
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc

BAD_NAMES = ["../../../../etc", "../no-such-dir", "a/b", ".hidden", "x" * 20_000, "bad\x00name"]


def _stub(server):
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.url))


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_grpc_path_refuses_a_name_that_is_no_model_name(edge_server, name):
    stub = _stub(edge_server)
    calls = {
        "unload": lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name), timeout=10),
        "load": lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name), timeout=10),
        "metadata": lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10),
        "config": lambda: stub.ModelConfig(pb.ModelConfigRequest(name=name), timeout=10),
        "ready": lambda: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10),
        "statistics": lambda: stub.ModelStatistics(pb.ModelStatisticsRequest(name=name), timeout=10),
        "trace": lambda: stub.TraceSetting(pb.TraceSettingRequest(model_name=name), timeout=10),
        "infer": lambda: stub.ModelInfer(pb.ModelInferRequest(model_name=name), timeout=10),
    }
    assert {what: _code(call) for what, call in calls.items()} == {
        what: grpc.StatusCode.INVALID_ARGUMENT for what in calls
    }


def test_a_version_that_is_no_number_is_refused_and_a_missing_one_is_not_found(edge_server):
    stub = _stub(edge_server)
    assert (
        _code(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="digits", version="../1"), timeout=10))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="digits", version="99"), timeout=10))
        == grpc.StatusCode.NOT_FOUND
    )


def _http(server, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    conn.request(method, path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else {}


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v2/repository/models/../unload"),
        ("POST", "/v2/repository/models/..%2F..%2Fetc/unload"),
        ("POST", "/v2/repository/models/.hidden/load"),
        ("GET", "/v2/models/digits%2Fconfig"),
        ("GET", "/v2/models/..%2Fdigits/ready"),
        ("GET", "/v2/models/digits/versions/x1/stats"),
        ("POST", "/v2/models/%2E%2E/infer"),
    ],
)
def test_every_http_path_refuses_a_name_that_is_no_model_name(edge_server, method, path):
    status, doc = _http(edge_server, method, path, b"{}")
    assert status == 400, (status, doc)
    assert "not a valid model name" in doc["error"] or "not a model version" in doc["error"]


def test_a_request_with_thousands_of_inputs_gets_its_real_status_with_a_bounded_message(edge_server):
    stub = _stub(edge_server)
    req = pb.ModelInferRequest(model_name="digits")
    for i in range(5000):
        req.inputs.add(name=f"input-{i:05d}-{'x' * 20}", datatype="FP32", shape=[1, 1, 8, 8])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 2000
    huge = pb.ModelInferRequest(model_name="d" * 20_000, raw_input_contents=[np.zeros(64, np.float32).tobytes()])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(huge, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 2000


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"inputs": ' + b"9" * 10_000 + b"}"], ids=["deep", "huge-number"]
)
def test_json_that_python_cannot_parse_is_the_clients_mistake(edge_server, body):
    status, doc = _http(edge_server, "POST", "/v2/models/digits/infer", body)
    assert status == 400, (status, doc)


def test_made_up_names_do_not_grow_the_metrics(edge_server):
    """Failed requests for names or versions that are not installed count under one label, "(other)": a client
    sending a new made-up name each time cannot add a metric series per name."""
    import urllib.request

    def series() -> list[str]:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{edge_server.metrics_port}/metrics", timeout=10).read().decode()
        )
        return [line for line in text.splitlines() if line.startswith("fedge_edge_requests_total{")]

    stub = _stub(edge_server)
    for i in range(20):
        for req in (
            pb.ModelInferRequest(model_name=f"made-up-{i}"),
            pb.ModelInferRequest(model_name=f"bad/{i}"),
            pb.ModelInferRequest(model_name="digits", model_version=str(1000 + i)),
        ):
            _code(lambda req=req: stub.ModelInfer(req, timeout=10))
    rows = series()
    assert not any("made-up-" in r or "bad/" in r or 'version="10' in r for r in rows), rows
    assert any('model="(other)"' in r for r in rows) and any('version="(other)"' in r for r in rows), rows
