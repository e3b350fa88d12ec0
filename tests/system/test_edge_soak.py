"""Edge soak: 32 concurrent clients for 60+ seconds against a real `fedge edge serve` while three new versions
are installed and one tampered bundle is offered: zero failed requests, the tampered bundle refused, every new
version served, and resident memory after warm-up growing less than 10%."""
import shutil
import threading
import time

import grpc
import numpy as np
import psutil
import pytest

from fedge.procs import stop_pid
from proto import grpc_service_pb2 as pb
from proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle
from tests.edge.conftest import EdgeProcess, fedge

pytestmark = pytest.mark.system
CLIENTS, SECONDS, MAX_REQUESTS = 32, 60.0, 400_000


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_soak_with_installs_and_a_tampered_bundle(tmp_path, keys, digits_bundle, report):
    repo = tmp_path / "repo"
    out = fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1]))
    assert out.returncode == 0, out.stderr
    server = EdgeProcess(repo, keys[1], tmp_path / "server.log")
    new = [make_bundle(tmp_path / f"v{i}", keys[0], "digits", seed=10 + i) for i in (2, 3, 4)]
    bad = tmp_path / "bad"
    shutil.copytree(make_bundle(tmp_path / "badsrc", keys[0], "digits", seed=99), bad)
    (bad / "model.fp32.onnx").write_bytes((bad / "model.fp32.onnx").read_bytes()[:-5] + b"evil!")

    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    req = pb.ModelInferRequest(model_name="digits")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    req.raw_input_contents.append(x.tobytes())
    served, failures, versions = [0] * CLIENTS, [], set()
    stop, lock = threading.Event(), threading.Lock()

    def client(i: int) -> None:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            while not stop.is_set() and sum(served) < MAX_REQUESTS:
                try:
                    v = stub.ModelInfer(req, timeout=30).model_version
                    served[i] += 1
                    if v not in versions:
                        with lock:
                            versions.add(v)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(10)  # warm-up: first batches, allocator, gRPC pools
        rss_warm = _rss(server.proc.pid)
        plan = [(15, new[0]), (25, bad), (35, new[1]), (45, new[2])]
        refused = None
        for at, bundle in plan:
            time.sleep(max(0.0, started + at - time.monotonic()))
            out = fedge("edge", "install", str(bundle), "--repo", str(repo), "--trust", str(keys[1]))
            if bundle is bad:
                refused = out
            else:
                assert out.returncode == 0, out.stderr
        time.sleep(max(0.0, started + SECONDS - time.monotonic()))
        rss_end = _rss(server.proc.pid)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - started
        stop_pid(server.proc.pid)
    growth = rss_end / rss_warm - 1
    report["edge_soak"] = {"clients": CLIENTS, "seconds": round(elapsed, 1), "requests": sum(served),
                           "failed": len(failures), "versions_served": sorted(versions),
                           "rss_warm_mib": round(rss_warm / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
                           "rss_growth": round(growth, 4)}
    assert failures == [], failures[:5]
    assert refused.returncode != 0 and "does not match its sha256" in refused.stderr
    assert versions == {"1", "2", "3", "4"}  # the tampered bundle never became a version
    assert elapsed >= SECONDS and sum(served) > 1000
    assert growth < 0.10, report["edge_soak"]
