"""The edge process in two parts: the device's services (repository watch, puller, metrics endpoint) once, around
serving workers. Two workers in one process share one DeviceServices: a version installed on disk while they serve
is loaded by both, and each keeps answering on its own port."""

from __future__ import annotations

import time

import grpc
import numpy as np

from fedge.core.procs import free_port
from fedge.edge_runtime.distribution.bundle import load_public_key
from fedge.edge_runtime.distribution.repository import install_bundle
from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.process.config import EdgeConfig
from fedge.edge_runtime.process.device import DeviceServices
from fedge.edge_runtime.process.worker import ServingWorker
from fedge.edge_runtime.serving.metrics import Metrics
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle


def _version(port: int) -> str:
    req = pb.ModelInferRequest(model_name="digits", raw_input_contents=[np.zeros((1, 1, 8, 8), np.float32).tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10).model_version


def test_one_device_two_workers(tmp_path, keys) -> None:
    repo = tmp_path / "repo"
    install_bundle(repo, make_bundle(tmp_path / "v1", keys[0], "digits", seed=0), load_public_key(keys[1]))
    trust = TrustFile(keys[1])
    workers = []
    device = None
    try:
        for _ in range(2):  # each worker its own metrics registry: one Prometheus view over workers is #38's
            cfg = EdgeConfig(repo=repo, trust=keys[1], host="127.0.0.1", port=free_port(), http_port=0, metrics_port=0)
            workers.append(ServingWorker(cfg, Metrics(), trust).start(None, None))
        device = DeviceServices(workers[0].cfg, workers[0].metrics, trust)
        device.prepare(serving=lambda: {m.name: m.version for m in workers[0].repo.live()})
        device.start(workers)
        assert [_version(w.port) for w in workers] == ["1", "1"]
        install_bundle(repo, make_bundle(tmp_path / "v2", keys[0], "digits", seed=1), load_public_key(keys[1]))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [_version(w.port) for w in workers] != ["2", "2"]:
            time.sleep(0.2)
        assert [_version(w.port) for w in workers] == ["2", "2"]  # the device's one watch loaded it in both
    finally:
        if device is not None:
            device.stop(1.0)
        for w in workers:
            w.drain(1.0)
            w.close()
