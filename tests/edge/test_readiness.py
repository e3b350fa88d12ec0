"""Triton's strict readiness against real `fedge edge serve` processes: while a model that should serve does not
(its only version fails verification on load), the server is not ready over gRPC, HTTP and grpc.health.v1, yet
serves the models it has; `--strict-readiness=false` makes it ready whenever it answers."""
import urllib.error
import urllib.request

import grpc
import pytest

from proto import grpc_service_pb2 as pb
from proto import grpc_service_pb2_grpc as pb_grpc
from proto import health_pb2, health_pb2_grpc
from tests.edge.conftest import EdgeProcess, digits_request, fedge


@pytest.mark.parametrize("strict", [True, False])
def test_a_model_that_cannot_load_makes_the_server_unready_unless_told_otherwise(strict, tmp_path, keys,
                                                                                 digits_bundle, intent_bundle):
    repo = tmp_path / "repo"
    for bundle in (digits_bundle, intent_bundle):
        assert fedge("edge", "install", str(bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    model = next((repo / "intent" / "1").glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-5] + b"evil!")  # tampered on the device after install
    server = EdgeProcess(repo, keys[1], tmp_path / "server.log", *(() if strict else ("--strict-readiness=false",)))
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is not strict
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert health == (health_pb2.HealthCheckResponse.NOT_SERVING if strict else health_pb2.HealthCheckResponse.SERVING)
            assert not stub.ModelReady(pb.ModelReadyRequest(name="intent"), timeout=10).ready
            assert stub.ModelInfer(digits_request(), timeout=10).outputs  # what can serve, serves
        try:
            status = urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=10).status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == (400 if strict else 200)
        assert urllib.request.urlopen(f"http://{server.http_url}/v2/health/live", timeout=10).status == 200
    finally:
        server.stop()
