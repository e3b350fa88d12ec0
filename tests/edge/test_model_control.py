"""Triton's explicit model control against a real `fedge edge serve` process: only the --load-model models serve;
the others are installed, listed as unloaded, and served once a client loads them, until it unloads them. A
model that is not served does not make the server unready, and a new version installed while it is unloaded
waits for the next load."""

import grpc
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle
from tests.edge.conftest import EdgeProcess, digits_request, fedge


def _intent_request() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="intent", raw_input_contents=[b"\x05\x00\x00\x00hello"])
    req.inputs.add(name="text", datatype="BYTES", shape=[1, 1])
    return req


def _index(stub) -> dict[tuple[str, str], tuple[str, str]]:
    models = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models
    return {(m.name, m.version): (m.state, m.reason) for m in models}


def test_explicit_model_control_serves_what_was_asked_and_what_clients_load(
    tmp_path, keys, digits_bundle, intent_bundle
):
    repo = tmp_path / "repo"
    for bundle in (digits_bundle, intent_bundle):
        assert fedge("edge", "install", str(bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    server = EdgeProcess(
        repo, keys[1], tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", "digits"
    )
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            ready = lambda name: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready  # intent is not asked for
            assert ready("digits") and not ready("intent")
            assert stub.ModelInfer(digits_request(), timeout=10).model_version == "1"
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(_intent_request(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not loaded (explicit model control" in err.value.details()
            assert _index(stub)[("intent", "1")] == ("UNAVAILABLE", "unloaded")
            assert _index(stub)[("digits", "1")][0] == "READY"

            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="intent"), timeout=60)
            assert ready("intent") and stub.ModelInfer(_intent_request(), timeout=10).outputs

            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="digits"), timeout=10)
            assert not ready("digits") and stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            v2 = make_bundle(tmp_path / "digits-v2", keys[0], "digits", seed=1)
            assert fedge("edge", "install", str(v2), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
            import time

            time.sleep(1.5)  # three of the repository watcher's looks: an unloaded model stays unloaded
            assert not ready("digits") and _index(stub)[("digits", "2")] == ("UNAVAILABLE", "unloaded")
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="digits"), timeout=60)
            assert stub.ModelInfer(digits_request(), timeout=10).model_version == "2"
    finally:
        server.stop()


def test_load_model_without_explicit_control_is_refused(tmp_path, keys):
    out = fedge(
        "edge",
        "serve",
        "--repo",
        str(tmp_path / "repo"),
        "--trust",
        str(keys[1]),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        "--load-model",
        "digits",
        timeout=60,
    )
    assert out.returncode == 2 and "--load-model goes with --model-control-mode explicit" in out.stderr


@pytest.mark.parametrize("load_model, intent_served", [("intent", True), ("*", False)])
def test_a_model_installed_while_serving_is_served_only_if_it_was_asked_for(
    tmp_path, keys, digits_bundle, intent_bundle, load_model, intent_served
):
    """--load-model NAME serves NAME whenever it is installed; '*' means the models installed at start, as in
    Triton."""
    import time

    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    server = EdgeProcess(
        repo, keys[1], tmp_path / "server.log", "--model-control-mode", "explicit", "--load-model", load_model
    )
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            ready = lambda name: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10).ready
            assert ready("digits") is (load_model == "*")
            assert (
                fedge("edge", "install", str(intent_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode
                == 0
            )
            deadline = time.monotonic() + (30 if intent_served else 1.5)
            while not ready("intent") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ready("intent") is intent_served
    finally:
        server.stop()
