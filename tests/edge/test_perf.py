"""`fedge edge perf` (Triton's perf_analyzer for fedge) against a real server process, over gRPC and HTTP: what
it reports must agree with what the server says it served."""

import json

import numpy as np

from fedge.proto import grpc_service_pb2 as pb
from tests.edge.conftest import fedge


def _served(stub, model: str) -> int:
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model))
    return sum(m.inference_stats.success.count for m in stats.model_stats)


def _perf(url: str, model: str, *flags: str):
    return fedge("edge", "perf", "--url", url, "--model", model, "--seconds", "1", "--warmup", "0.3", *flags)


def test_perf_over_grpc_counts_what_the_server_served(edge_server, stub):
    before = _served(stub, "digits")
    out = _perf(edge_server.url, "digits", "--concurrency", "1,4", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["inputs"] == {"input": ["float32", [1, 1, 8, 8]]}  # made from the model's metadata
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 4]
    for lv in doc["levels"]:
        assert lv["requests"] > 10 and lv["failures"] == 0
        assert 0 < lv["p50_ms"] <= lv["p90_ms"] <= lv["p99_ms"]
        assert lv["requests_per_s"] == lv["inferences_per_s"]
        assert lv["server_compute_us"] > 0 and lv["server_queue_us"] >= 0
    # the windows leave out the warm-up, so the server served more than the tool counted, never fewer
    assert _served(stub, "digits") - before >= sum(lv["requests"] for lv in doc["levels"])


def test_perf_over_http_with_text_rows_and_a_table(edge_server, stub):
    before = _served(stub, "intent")
    out = _perf(
        f"http://{edge_server.http_url}",
        "intent",
        "--concurrency",
        "2",
        "--text",
        "reset my password",
        "--text",
        "where is my parcel",
    )
    assert out.returncode == 0, out.stderr
    head, columns, row = out.stdout.strip().splitlines()
    assert "2 row(s) per request" in head and columns.split()[:3] == ["clients", "req/s", "infer/s"]
    clients, rps, ips = row.split()[:3]
    assert clients == "2" and float(ips) == 2 * float(rps) > 0
    assert _served(stub, "intent") - before >= float(rps) * 1  # 1 s window


def test_perf_reports_refused_requests_and_bad_arguments(edge_server, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 3, 8, 8), np.float32))  # digits wants 1x8x8 per row
    out = _perf(edge_server.url, "digits", "--concurrency", "1", "--npy", str(wrong), "--json")
    assert out.returncode == 1
    level = json.loads(out.stdout)["levels"][0]
    assert level["requests"] == 0 and level["failures"] > 0
    assert level["first_failure"].startswith("INVALID_ARGUMENT") and "first: INVALID_ARGUMENT" in out.stderr

    out = _perf(edge_server.url, "nope")
    assert out.returncode == 2 and "NOT_FOUND" in out.stderr
    out = _perf(edge_server.url, "digits", "--concurrency", "0,8")
    assert out.returncode == 2 and "--concurrency" in out.stderr
    out = _perf(edge_server.url, "digits", "--batch", "0")
    assert out.returncode == 2 and "--batch" in out.stderr
