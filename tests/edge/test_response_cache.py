"""The response cache (--cache-config local,size=BYTES): repeated requests are answered without running the model,
counted as Triton counts them, never across model versions, and bounded by its size."""

import json
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest

from fedge.core.procs import fedge_env
from fedge.edge_runtime.serving.response_cache import ResponseCache, parse_config, request_key
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle, reference_logits
from tests.edge.conftest import fedge, serving


def test_the_cache_drops_least_recently_used_answers_to_stay_within_its_size():
    out = {"logits": np.zeros(10, np.float32)}  # 40 bytes + a 32-byte key: 72 per answer
    cache = ResponseCache(3 * 72)
    keys = [bytes([i]) * 32 for i in range(4)]
    for k in keys[:3]:
        assert cache.put(k, "digits", out)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], "digits", out)
    assert (cache.get(keys[1]), len(cache), cache.bytes, cache.evictions) == (None, 3, 216, 1)
    assert not cache.put(b"k" * 32, "digits", {"logits": np.zeros(100, np.float32)})  # larger than the whole cache
    assert cache.drop_model("digits") == 3 and (len(cache), cache.bytes) == (0, 0)
    stored = np.ones(10, np.float32)
    cache.put(keys[0], "digits", {"logits": stored})
    stored[:] = 7  # the cache holds its own copy
    assert cache.get(keys[0])["logits"][0] == 1


def test_a_request_key_tells_apart_everything_that_changes_the_answer():
    x = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    base = request_key("digits", 1, x, {"logits": 0})
    assert base == request_key("digits", 1, {"input": np.zeros((1, 1, 8, 8), np.float32)}, {"logits": 0})
    assert base != request_key("digits", 2, x, {"logits": 0})
    assert base != request_key("digits", 1, x, {"logits": 3})
    assert base != request_key("digits", 1, {"input": np.zeros((1, 64), np.float32)}, {"logits": 0})
    assert base != request_key("digits", 1, {"input": np.zeros((1, 1, 8, 8), np.float16)}, {"logits": 0})
    split = [np.array([[b"ab"], [b"c"]], object), np.array([[b"a"], [b"bc"]], object)]
    assert request_key("intent", 1, {"text": split[0]}, {}) != request_key("intent", 1, {"text": split[1]}, {})


def test_cache_config_takes_tritons_local_size_setting():
    assert parse_config([]) == 0 and parse_config(["local,size=1048576"]) == 1048576
    for bad in ("redis,size=10", "local,size=lots", "local"):
        with pytest.raises(ValueError, match="local,size"):
            parse_config([bad])


@pytest.fixture(scope="module")
def cached_server(tmp_path_factory, keys, digits_bundle, intent_bundle):
    yield from serving(
        tmp_path_factory.mktemp("cache"), keys, (digits_bundle, intent_bundle), "--cache-config", "local,size=1048576"
    )


def _stats(stub, model="digits"):
    s = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]
    i = s.inference_stats
    return {
        "hit": i.cache_hit.count,
        "miss": i.cache_miss.count,
        "success": i.success.count,
        "executions": s.execution_count,
        "version": s.version,
    }


def _infer(stub, x, version=""):
    req = pb.ModelInferRequest(model_name="digits", model_version=version, raw_input_contents=[x.tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    resp = stub.ModelInfer(req, timeout=10)
    return resp, np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(len(x), -1)


def test_repeated_requests_are_answered_from_the_cache_until_a_new_version_swaps_in(
    cached_server, keys, digits_bundle, tmp_path
):
    x, y = (np.random.default_rng(s).random((2, 1, 8, 8), dtype=np.float32) for s in (0, 1))
    with grpc.insecure_channel(cached_server.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config.response_cache.enable
        before = _stats(stub)
        _first, out1 = _infer(stub, x)
        _second, out2 = _infer(stub, x)
        np.testing.assert_array_equal(out1, out2)
        np.testing.assert_allclose(out1, reference_logits(digits_bundle, x), rtol=1e-5, atol=1e-5)
        after = _stats(stub)
        assert (after["hit"] - before["hit"], after["miss"] - before["miss"]) == (1, 1)
        assert after["executions"] - before["executions"] == 1  # the second answer never reached the model
        assert after["success"] - before["success"] == 2
        _infer(stub, y)  # other inputs: a miss, and the model runs
        assert _stats(stub)["executions"] - before["executions"] == 2

        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{cached_server.metrics_port}/metrics", timeout=5).read().decode()
        )
        assert 'fedge_edge_cache_lookups_total{model="digits",result="hit"} 1.0' in metrics
        assert "fedge_edge_cache_entries 2.0" in metrics and "fedge_edge_cache_capacity_bytes 1.048576e+06" in metrics

        # the same request through tritonclient's own protos: the cache fields are Triton's
        code = (
            "import json, sys, tritonclient.grpc as g; c = g.InferenceServerClient(sys.argv[1]);"
            " s = c.get_inference_statistics('digits', as_json=True)['model_stats'][0]['inference_stats'];"
            " cfg = c.get_model_config('digits', as_json=True)['config'];"
            " print(json.dumps({'hit': s['cache_hit'], 'enable': cfg['response_cache']['enable']}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, cached_server.url], capture_output=True, text=True, timeout=60, env=fedge_env()
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["enable"] is True and int(seen["hit"]["count"]) == 1 and int(seen["hit"]["ns"]) > 0

        # a new version swaps in: the old version's answers are not served for it
        v2 = make_bundle(tmp_path / "v2", keys[0], "digits", seed=5)
        assert (
            fedge("edge", "install", str(v2), "--repo", str(cached_server.repo), "--trust", str(keys[1])).returncode
            == 0
        )
        deadline = time.monotonic() + 30
        while _infer(stub, y)[0].model_version != "2":
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.1)
        resp, out3 = _infer(stub, x)
        assert resp.model_version == "2"
        np.testing.assert_allclose(out3, reference_logits(v2, x), rtol=1e-5, atol=1e-5)
        assert not np.allclose(out3, out1)

        # a model config can turn the cache off for its model
        stub.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(
                model_name="digits",
                parameters={
                    "config": pb.ModelRepositoryParameter(
                        string_param=json.dumps({"dynamic_batching": {}, "response_cache": {"enable": False}})
                    )
                },
            )
        )
        assert not stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config.response_cache.enable
        before = _stats(stub)
        _infer(stub, x)
        _infer(stub, x)
        after = _stats(stub)
        assert (after["hit"], after["miss"], after["executions"] - before["executions"]) == (
            before["hit"],
            before["miss"],
            2,
        )


def test_text_requests_hit_the_cache_too(cached_server):
    req = pb.ModelInferRequest(model_name="intent")
    req.inputs.add(
        name="text", datatype="BYTES", shape=[1, 1], contents=pb.InferTensorContents(bytes_contents=[b"I lost my card"])
    )
    req.outputs.add(name="label")
    with grpc.insecure_channel(cached_server.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        before = _stats(stub, "intent")
        labels = [stub.ModelInfer(req, timeout=10).raw_output_contents[0] for _ in range(3)]
        after = _stats(stub, "intent")
    assert labels[0] == labels[1] == labels[2] and len(labels[0]) > 4
    assert (after["hit"] - before["hit"], after["miss"] - before["miss"]) == (2, 1)
