"""Triton's strict readiness against real `fedge edge serve` processes: while a model that should serve does not
(its only version fails verification on load), the server is not ready over gRPC, HTTP and grpc.health.v1, yet
serves the models it has; `--strict-readiness=false` makes it ready whenever it answers."""

import time
import urllib.error
import urllib.request

import grpc
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from fedge.proto import health_pb2, health_pb2_grpc
from tests.edge.conftest import EdgeProcess, digits_request, fedge


@pytest.mark.parametrize("strict", [True, False])
def test_a_model_that_cannot_load_makes_the_server_unready_unless_told_otherwise(
    strict, tmp_path, keys, digits_bundle, intent_bundle
):
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
            assert health == (
                health_pb2.HealthCheckResponse.NOT_SERVING if strict else health_pb2.HealthCheckResponse.SERVING
            )
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


def test_an_onnxruntime_that_cannot_be_imported_is_named_with_what_to_do(tmp_path, keys, digits_bundle, monkeypatch):
    """A server whose onnxruntime fails to import (here blocked by a sitecustomize; on a device, a JetPack wheel
    built against NumPy 1.x beside NumPy 2) is live, its models are unavailable, and the status says why."""
    from importlib import metadata

    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    server = EdgeProcess(repo, keys[1], tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(digits_request(), timeout=10)
    finally:
        server.stop()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    said = err.value.details()
    assert (
        f"onnxruntime {metadata.version('onnxruntime')} cannot be imported (ModuleNotFoundError: import of"
        " onnxruntime halted" in said
    ), said


def test_an_onnxruntime_built_for_numpy_1_beside_numpy_2_says_to_install_numpy_below_2(monkeypatch):
    from importlib import metadata

    from fedge.edge_runtime.serving import backends

    installed = {"onnxruntime": "1.17.3"}

    def version(dist):
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(backends.np, "__version__", "2.2.6")
    said = backends.onnxruntime_import_problem(ImportError())
    assert (
        said.startswith("onnxruntime 1.17.3 cannot be imported (ImportError: no message); ")
        and "NumPy 1.x and this environment has NumPy 2.2.6: pip install 'numpy<2'" in said
    )
    installed["onnxruntime"] = "1.19.0"  # built for NumPy 2: the error is something else, no advice
    assert "numpy" not in backends.onnxruntime_import_problem(ImportError("libcudart.so.12")).lower()
    monkeypatch.setattr(backends.np, "__version__", "1.26.4")
    installed.clear()
    installed["onnxruntime-gpu"] = "1.17.0"
    assert "numpy" not in backends.onnxruntime_import_problem(ImportError()).lower()
    installed.clear()
    assert backends.onnxruntime_import_problem(ImportError()).startswith("onnxruntime is not installed")


def test_both_onnxruntime_packages_installed_is_warned_at_start(tmp_path, keys, digits_bundle, monkeypatch):
    """What `pip install .` leaves on a device that had NVIDIA's onnxruntime-gpu: PyPI's onnxruntime beside it
    (here a second distribution's metadata on the path), both writing the onnxruntime module."""
    from importlib import metadata

    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    info = tmp_path / "site" / "onnxruntime_gpu-1.17.0.dist-info"  # this venv has the CPU package
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.17.0\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    server = EdgeProcess(repo, keys[1], tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.url) as ch:  # it serves with the one that imports
            assert pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(digits_request(), timeout=10).outputs
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert (
        f"WARNING fedge.edge: both onnxruntime {metadata.version('onnxruntime')} and onnxruntime-gpu 1.17.0 are"
        " installed: they share the onnxruntime module" in log
    ), log


def test_a_start_whose_current_version_is_damaged_serves_the_newest_kept_version(tmp_path, keys, digits_bundle):
    """A device restarting after a power cut left its newest version half written (or with a file damaged on the
    disk) serves the version before it, as a running server keeps the old version when a new one fails; the
    damaged one is reported, CURRENT is left alone, and the next good install serves."""
    from tests.edge.bundles import make_bundle

    repo = tmp_path / "repo"
    for bundle in (digits_bundle, make_bundle(tmp_path / "v2", keys[0], "digits", seed=1)):
        assert fedge("edge", "install", str(bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    model = repo / "digits" / "2" / "model.fp32.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # torn write
    server = EdgeProcess(repo, keys[1], tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ModelInfer(digits_request(), timeout=10).model_version == "1"
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            index = {m.version: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models}
            assert index["1"].state == "READY" and index["2"].state == "UNAVAILABLE"
            assert "model.fp32.onnx" in index["2"].reason and "sha256" in index["2"].reason, index["2"].reason
            assert (repo / "digits" / "CURRENT").read_text().strip() == "2"
            v3 = make_bundle(tmp_path / "v3", keys[0], "digits", seed=2)
            assert fedge("edge", "install", str(v3), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
            deadline = time.monotonic() + 30
            while stub.ModelInfer(digits_request(), timeout=10).model_version != "3" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert stub.ModelInfer(digits_request(), timeout=10).model_version == "3"
    finally:
        server.stop()
    assert (
        "model digits: version 2 (CURRENT) failed to load; serving kept version 1 instead"
        in (tmp_path / "server.log").read_text()
    )
