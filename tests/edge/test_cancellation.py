"""Requests whose client has gone (deadline passed, call cancelled, HTTP connection closed) while they wait for a
busy model are dropped, not computed, and counted as CANCELLED. Over the wire against a server in this process,
whose batched backend call is slowed to 300 ms (a stand-in for a heavy model; the digits model answers in
microseconds)."""

import socket
import time

import grpc
import pytest

from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import digits_request, slowed_server


@pytest.fixture
def slow_server(tmp_path, keys, digits_bundle):
    yield from slowed_server(tmp_path, keys, digits_bundle)


def test_requests_whose_deadline_passed_in_the_queue_are_not_computed(slow_server):
    server, computed = slow_server
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        busy = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)  # the model is now busy with it for 300 ms
        hasty = [stub.ModelInfer.future(digits_request(), timeout=0.1) for _ in range(5)]
        cancelled = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)  # queued by now
        cancelled.cancel()
        for f in hasty:
            with pytest.raises(grpc.RpcError) as err:
                f.result()
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert busy.result().outputs[0].name
        patient = stub.ModelInfer(digits_request(), timeout=10)  # the server goes on answering
        assert patient.outputs[0].name
    assert computed == [1, 1], computed  # the busy request and the patient one: nothing for the 6 gone
    value = server.metrics.registry.get_sample_value
    assert value("fedge_edge_requests_total", {"model": "digits", "version": "", "status": "CANCELLED"}) == 6


def test_an_http_client_that_hangs_up_is_not_computed_for(slow_server):
    server, computed = slow_server
    body = (
        '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": %s}]}' % ([0.0] * 64)
    ).encode()
    raw = f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        busy = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)  # the model is now busy with it for 300 ms
        clients = [socket.create_connection(("127.0.0.1", server.http_port), timeout=10) for _ in range(3)]
        for c in clients:
            c.sendall(raw)
        time.sleep(0.05)  # queued by now; then their clients give up
        for c in clients:
            c.close()
        assert busy.result().outputs[0].name
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as c:  # one that waits
            c.sendall(raw)
            assert c.recv(64).startswith(b"HTTP/1.1 200")
    assert computed == [1, 1], computed
    value = server.metrics.registry.get_sample_value
    assert value("fedge_edge_requests_total", {"model": "digits", "version": "", "status": "CANCELLED"}) == 3
