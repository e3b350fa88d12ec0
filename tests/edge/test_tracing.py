"""Triton's trace extension over the wire: `fedge edge serve --trace-config ...`, settings read and changed with
tritonclient (globally and per model), sampled requests' timestamps in the trace file in Triton's format, written
at shutdown or every log-frequency traces; bad settings refused with the reason."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import fedge, serving, triton_script

ORDER = [
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
]


def _check_timestamps(trace: dict) -> None:
    names = [t["name"] for t in trace["timestamps"]]
    assert names == ORDER, names
    ns = [t["ns"] for t in trace["timestamps"]]
    assert ns == sorted(ns) and ns[-1] - ns[0] < 10e9, ns


def test_tritonclient_trace_settings_and_the_trace_file(tmp_path, keys, digits_bundle, intent_bundle):
    trace_file = tmp_path / "trace.json"
    run = serving(
        tmp_path,
        keys,
        (digits_bundle, intent_bundle),
        "--trace-config",
        f"triton,file={trace_file}",
        "--trace-config",
        "level=TIMESTAMPS",
        "--trace-config",
        "rate=2",
    )
    server = next(run)
    try:
        r = triton_script("tests.edge.triton_trace_check", server.url)
    finally:
        next(run, None)  # stops the server by PID: the traces are written at shutdown (log-frequency 0)
    assert "trace" in r["extensions"]
    assert r["global"] == {
        "trace_file": [str(trace_file)],
        "trace_level": ["TIMESTAMPS"],
        "trace_rate": ["2"],
        "trace_count": ["-1"],
        "log_frequency": ["0"],
        "trace_mode": ["triton"],
    }
    assert r["intent_set"]["trace_rate"] == ["1"] and r["intent_set"]["trace_count"] == ["3"]
    assert r["intent_after"]["trace_count"] == ["0"]  # its own budget of 3, spent on 5 requests
    assert r["global_after"]["trace_rate"] == ["2"] and r["global_after"]["trace_count"] == ["-1"]
    assert r["set_file"][0] == "StatusCode.INVALID_ARGUMENT" and "over the network" in r["set_file"][1]
    assert r["tensors"][0] == "StatusCode.INVALID_ARGUMENT" and "TENSORS" in r["tensors"][1]
    assert r["bad_rate"][0] == "StatusCode.INVALID_ARGUMENT" and "trace_rate must be >= 1" in r["bad_rate"][1]
    assert r["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert r["global_unchanged"] == r["global"]  # the refused updates changed nothing (all or none)
    assert r["intent_cleared"]["trace_rate"] == ["2"]  # cleared: the global setting again

    traces = json.loads(trace_file.read_text())
    by_model = {m: [t for t in traces if t["model_name"] == m] for m in ("digits", "intent")}
    assert [t["request_id"] for t in by_model["digits"]] == ["d1", "d3", "d5", "d7", "d9"]  # every 2nd request
    assert [t["request_id"] for t in by_model["intent"]] == ["t0", "t1", "t2"]  # rate 1, count 3
    assert len({t["id"] for t in traces}) == len(traces) == 8
    for t in traces:
        assert t["model_version"] == 1
        _check_timestamps(t)


def _infer(url: str, n: int, concurrency: int) -> None:
    with grpc.insecure_channel(url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        x = np.zeros((1, 1, 8, 8), np.float32).tobytes()
        stub.ServerLive(pb.ServerLiveRequest(), timeout=30)  # connected before the clocks start
        together = threading.Barrier(concurrency)

        def one(i: int) -> None:
            req = pb.ModelInferRequest(model_name="digits", id=f"r{i}", raw_input_contents=[x])
            req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
            if i < concurrency:  # the first wave leaves at once
                together.wait(30)
            stub.ModelInfer(req, timeout=30)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(n)))


def _wait_for(path, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while not path.exists():  # written by a thread of its own, replaced at once (never half a file)
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_log_frequency_writes_numbered_files_while_serving(tmp_path, keys, heavy):
    """On the heavy stand-in model: with the digits one (microseconds a call) on a loaded machine the 8 requests
    could each arrive after the previous was answered, and never share a batch."""
    trace_file = tmp_path / "t.json"
    run = serving(
        tmp_path,
        keys,
        (heavy,),
        "--trace-config",
        f"triton,file={trace_file}",
        "--trace-config",
        "level=TIMESTAMPS",
        "--trace-config",
        "rate=1",
        "--trace-config",
        "triton,log-frequency=4",
        "--max-queue-delay-us",
        "20000",
    )
    server = next(run)
    try:
        _infer(server.url, 8, concurrency=8)
        first = [_wait_for(tmp_path / f"t.json.{i}") for i in range(2)]  # written while serving
        _infer(server.url, 3, concurrency=1)
    finally:
        next(run, None)
    assert [len(f) for f in first] == [4, 4]
    assert len(json.loads((tmp_path / "t.json.2").read_text())) == 3  # the rest, at shutdown
    assert not trace_file.exists()
    batched = [t for f in first for t in f]
    for t in batched:
        _check_timestamps(t)
    # requests that ran in one batch share its compute timestamps
    starts = [next(s["ns"] for s in t["timestamps"] if s["name"] == "COMPUTE_START") for t in batched]
    assert len(set(starts)) < len(starts)


def test_tracing_needs_a_file_given_at_start(edge_server):
    with grpc.insecure_channel(edge_server.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        got = stub.TraceSetting(pb.TraceSettingRequest())
        assert dict((k, list(v.value)) for k, v in got.settings.items())["trace_level"] == ["OFF"]
        req = pb.TraceSettingRequest(model_name="digits")
        req.settings["trace_level"].value.append("TIMESTAMPS")
        with pytest.raises(grpc.RpcError) as err:
            stub.TraceSetting(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "trace file" in err.value.details()


@pytest.mark.parametrize(
    "flags, message",
    [
        (("level=TENSORS", "triton,file=/tmp/x"), "fedge records timestamps, not tensors"),
        (("mode=opentelemetry",), "not supported"),
        (("level=TIMESTAMPS",), "needs a trace file"),
        (("rate=0",), "trace_rate must be >= 1"),
        (("colour=blue",), "unknown setting 'colour'"),
    ],
)
def test_bad_trace_config_is_refused_at_start(flags, message, keys, tmp_path):
    args = [a for f in flags for a in ("--trace-config", f)]
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
        *args,
        timeout=60,
    )
    assert out.returncode == 2 and message in out.stderr, out.stderr
