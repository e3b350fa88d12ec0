"""Triton's queue policy over the wire: a model whose config bounds its queue and its queue time refuses the
overflow at once and the requests that waited too long, UNAVAILABLE over gRPC and 503 over HTTP, and keeps
answering the others. Against a server in this process whose batched backend call is slowed to 600 ms (a stand-in
for a heavy model; the digits model answers in microseconds)."""

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest

from fedge.edge_runtime.common.errors import InvalidInput
from fedge.edge_runtime.serving.batcher import BatchingConfig, QueuePolicy
from fedge.edge_runtime.serving.model_config import parse
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import digits_request, slowed_server

POLICY = {"max_queue_size": 2, "default_timeout_microseconds": 150_000, "allow_timeout_override": True}
CONFIG = {"dynamic_batching": {"max_queue_delay_microseconds": 0, "default_queue_policy": POLICY}}


@pytest.fixture
def slow_server(tmp_path, keys, digits_bundle):
    yield from slowed_server(tmp_path, keys, digits_bundle, CONFIG, delay_s=0.6)  # 4x the queue timeout


def _outcome(future) -> str:
    try:
        future.result()
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


def test_overflow_is_refused_at_once_and_late_requests_are_not_computed(slow_server):
    server, computed = slow_server
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        policy = stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config.dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds, policy.allow_timeout_override) == (
            2,
            150_000,
            True,
        )

        busy = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)  # the model is busy with it for 600 ms
        queued = [stub.ModelInfer.future(digits_request(), timeout=10) for _ in range(2)]
        time.sleep(0.05)
        gauge = server.metrics.registry.get_sample_value  # what the metrics endpoint would show now
        assert gauge("fedge_edge_pending_requests", {"model": "digits", "version": "1"}) == 2
        assert gauge("fedge_edge_inflight_requests") == 3
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:  # a third one does not fit the queue: refused at once
            stub.ModelInfer(digits_request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "queue is full" in err.value.details()
        assert time.perf_counter() - t0 < 0.3
        # the two queued ones waited ~550 ms for the busy call, past the model's 150 ms: refused, not computed
        assert [_outcome(busy), *map(_outcome, queued)] == ["OK", "UNAVAILABLE", "UNAVAILABLE"]

        busy = stub.ModelInfer.future(digits_request(), timeout=10)
        time.sleep(0.05)
        patient = stub.ModelInfer.future(digits_request(), timeout=10)  # no timeout of its own: 150 ms
        hasty = stub.ModelInfer.future(digits_request(timeout_us=20_000), timeout=10)  # its own, shorter
        assert [_outcome(busy), _outcome(patient), _outcome(hasty)] == ["OK", "UNAVAILABLE", "UNAVAILABLE"]
        assert stub.ModelInfer(digits_request(), timeout=10).outputs  # an idle model answers as ever
    assert computed == [1, 1, 1], computed
    value = server.metrics.registry.get_sample_value
    assert value("fedge_edge_requests_total", {"model": "digits", "version": "", "status": "UNAVAILABLE"}) == 5


def test_overflow_over_http_is_503(slow_server):
    server, _ = slow_server
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}]})
    url = f"http://127.0.0.1:{server.http_port}/v2/models/digits/infer"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        held = [stub.ModelInfer.future(digits_request(), timeout=10)]
        time.sleep(0.05)
        held += [stub.ModelInfer.future(digits_request(), timeout=10) for _ in range(2)]
        time.sleep(0.05)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, body.encode(), timeout=10)
        assert err.value.code == 503 and "queue is full" in json.loads(err.value.read())["error"]
        for f in held:
            _outcome(f)


@pytest.mark.parametrize(
    "policy, words",
    [
        ({"timeout_action": "DELAY"}, "REJECT"),
        ({"max_queue_size": -1}, "max_queue_size must be an integer >= 0"),
        ({"allow_timeout_override": "yes"}, "true or false"),
        ({"priority_levels": 2}, "takes only"),
    ],
)
def test_queue_policies_fedge_cannot_honour_are_refused(policy, words):
    with pytest.raises(InvalidInput, match=words):
        parse(json.dumps({"dynamic_batching": {"default_queue_policy": policy}}), "digits", BatchingConfig(), "config")


PRIORITY_CONFIG = {
    "max_batch_size": 1,
    "dynamic_batching": {
        "max_queue_delay_microseconds": 0,
        "priority_levels": 2,
        "default_priority_level": 2,
        "priority_queue_policy": {"1": {"max_queue_size": 4}},
    },
}


@pytest.fixture
def prioritised_server(tmp_path, keys, digits_bundle):
    yield from slowed_server(tmp_path, keys, digits_bundle, PRIORITY_CONFIG, delay_s=0.3)


def test_requests_with_a_higher_priority_overtake_the_queue_over_grpc_and_http(prioritised_server):
    """tritonclient's ``infer(..., priority=1)`` sends the request parameter ``priority`` as a uint64, the HTTP
    client as a JSON number: both jump the requests already waiting at the default level."""
    import threading

    server, computed = prioritised_server
    done, lock = [], threading.Lock()

    def finished(tag):
        def record(_):
            with lock:
                done.append(tag)

        return record

    urgent = digits_request()
    urgent.parameters["priority"].uint64_param = 1
    body = json.dumps(
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}],
            "parameters": {"priority": 1},
        }
    ).encode()
    url = f"http://127.0.0.1:{server.http_port}/v2/models/digits/infer"

    def over_http():
        urllib.request.urlopen(url, body, timeout=10).read()
        finished("urgent-http")(None)

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        batching = stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config.dynamic_batching
        assert (batching.priority_levels, batching.default_priority_level) == (2, 2)
        assert batching.priority_queue_policy[1].max_queue_size == 4
        futures = [stub.ModelInfer.future(digits_request(), timeout=10)]  # busy for 300 ms
        futures[0].add_done_callback(finished("busy"))
        time.sleep(0.05)
        for i in range(2):
            futures.append(stub.ModelInfer.future(digits_request(), timeout=10))
            futures[-1].add_done_callback(finished(f"routine-{i}"))
            time.sleep(0.02)  # arrival order within the level
        http = threading.Thread(target=over_http)
        http.start()
        futures.append(stub.ModelInfer.future(urgent, timeout=10))
        futures[-1].add_done_callback(finished("urgent-grpc"))
        for f in futures:
            assert f.result().outputs
        http.join(10)
    assert done[0] == "busy" and set(done[1:3]) == {"urgent-grpc", "urgent-http"}, done
    assert done[3:] == ["routine-0", "routine-1"], done
    assert computed == [1] * 5


@pytest.mark.parametrize(
    "batching, words",
    [
        ({"default_priority_level": 1}, "need priority_levels >= 1"),
        ({"priority_levels": 2}, r"default_priority_level must be in \[1, 2\]"),
        ({"priority_levels": 2, "default_priority_level": 3}, r"must be in \[1, 2\]"),
        (
            {"priority_levels": 2, "default_priority_level": 1, "priority_queue_policy": {"3": {}}},
            "not a priority level",
        ),
        (
            {
                "priority_levels": 2,
                "default_priority_level": 1,
                "priority_queue_policy": {"1": {"timeout_action": "DELAY"}},
            },
            "priority_queue_policy.1.timeout_action",
        ),
    ],
)
def test_priority_settings_that_do_not_fit_are_refused_with_the_reason(batching, words):
    with pytest.raises(InvalidInput, match=words):
        parse(json.dumps({"dynamic_batching": batching}), "digits", BatchingConfig(), "config")


def test_a_priority_level_policy_leaves_out_what_it_does_not_set():
    """As in Triton: a level's own policy is whole; the default policy does not fill its gaps."""
    got = parse(
        json.dumps(
            {
                "dynamic_batching": {
                    "default_queue_policy": {"max_queue_size": 3, "default_timeout_microseconds": 500},
                    "priority_levels": "3",
                    "default_priority_level": 2,  # Triton's JSON writes uint64 as strings
                    "priority_queue_policy": {"1": {"max_queue_size": 9}},
                }
            }
        ),
        "d",
        BatchingConfig(),
        "c",
    )
    assert (got.priority_levels, got.default_priority_level) == (3, 2)
    assert got.policy(1) == QueuePolicy(max_queue_size=9)
    assert got.policy(2) == got.policy(3) == QueuePolicy(max_queue_size=3, timeout_us=500)


def test_a_model_config_keeps_the_server_flags_it_does_not_set():
    flags = BatchingConfig(queue=QueuePolicy(max_queue_size=9, timeout_us=1000))
    got = parse(json.dumps({"dynamic_batching": {"default_queue_policy": {"max_queue_size": 3}}}), "d", flags, "c")
    assert got.queue == QueuePolicy(max_queue_size=3, timeout_us=1000)
