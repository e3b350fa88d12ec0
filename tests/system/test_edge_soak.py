"""Edge soak: 32 concurrent clients (8 of them over HTTP) for 60+ seconds against a real `fedge edge serve` while
three new versions are installed and one tampered bundle is offered: zero failed requests, the tampered bundle
refused, every new version served, and resident memory after warm-up growing less than 10%."""

import http.client
import json
import shutil
import threading
import time

import grpc
import numpy as np
import psutil
import pytest

from fedge.core.procs import stop_pid
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle
from tests.edge.conftest import EdgeProcess, fedge

pytestmark = pytest.mark.system
CLIENTS, HTTP_CLIENTS, SECONDS, MAX_REQUESTS = 32, 8, 60.0, 400_000


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

    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 1, 8, 8],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    http_failures = []

    def http_client(i: int) -> None:
        """tritonclient.http's wire form (JSON header + binary tensor) on one keep-alive connection."""
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        while not stop.is_set() and sum(served) < MAX_REQUESTS:
            try:
                conn.request(
                    "POST",
                    "/v2/models/digits/infer",
                    head + x.tobytes(),
                    {"Inference-Header-Content-Length": str(len(head))},
                )
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                http_failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            if resp.status != 200:
                http_failures.append(f"{resp.status}: {body[:200]!r}")
                continue
            served[i] += 1
            try:
                v = json.loads(body[: int(resp.headers["Inference-Header-Content-Length"])])["model_version"]
            except (KeyError, ValueError) as exc:  # not the binary answer asked for
                http_failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if v not in versions:
                with lock:
                    versions.add(v)
        conn.close()

    def client(i: int) -> None:
        if i < HTTP_CLIENTS:
            return http_client(i)
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
    failures += http_failures
    report["edge_soak"] = {
        "clients": CLIENTS,
        "http_clients": HTTP_CLIENTS,
        "seconds": round(elapsed, 1),
        "requests": sum(served),
        "http_requests": sum(served[:HTTP_CLIENTS]),
        "failed": len(failures),
        "versions_served": sorted(versions),
        "rss_warm_mib": round(rss_warm / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_growth": round(growth, 4),
    }
    assert failures == [], failures[:5]
    assert refused.returncode != 0 and "does not match its sha256" in refused.stderr
    assert versions == {"1", "2", "3", "4"}  # the tampered bundle never became a version
    assert elapsed >= SECONDS and sum(served) > 1000 and sum(served[:HTTP_CLIENTS]) > 100
    assert growth < 0.10, report["edge_soak"]
