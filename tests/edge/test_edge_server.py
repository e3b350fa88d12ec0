"""The edge runtime as a real process on 127.0.0.1, spoken to over the wire."""

import json
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from fedge.edge_runtime.frontends.grpc_servicer import STREAM_IN_FLIGHT
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from fedge.proto import health_pb2, health_pb2_grpc
from tests.edge.bundles import reference_logits
from tests.edge.conftest import edge_cli, triton_script


def test_tritonclient_works_unchanged(edge_server, digits_bundle, tmp_path):
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = triton_script("tests.edge.triton_check", edge_server.url, str(tmp_path / "x.npy"))
    assert r["live"] and r["ready"] and r["digits_ready"] and r["intent_ready"]
    assert r["digits_inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}]
    from fedge.edge_runtime.serving.backends import cuda_available

    tol = 2e-3 if cuda_available() else 1e-5  # CUDA convolutions (TF32 on Ampere and later) vs the CPU reference
    np.testing.assert_allclose(np.array(r["logits"]), reference_logits(digits_bundle, x), rtol=tol, atol=tol)
    # Triton's classification extension: top 3 per row as "score:index:label", best first
    logits = reference_logits(digits_bundle, x)
    labels = json.loads((digits_bundle / "manifest.json").read_text())["labels"]
    for row, top in zip(logits, r["top3"]):
        best = np.argsort(-row)[:3]
        assert [t.split(":", 1)[1] for t in top] == [f"{i}:{labels[i]}" for i in best]
        np.testing.assert_allclose([float(t.split(":")[0]) for t in top], row[best], atol=1e-5)
    assert r["intent_logits_shape"] == [2, 12]
    assert all(label in ("lost_card", "data_usage") or label for label in r["intent_labels"])
    assert sorted(set(r["index"])) == ["digits", "intent"]

    # model configuration, read the way Triton's own example clients read it (image_client.py's parse_model)
    digits, intent = r["config"]["digits"], r["config"]["intent"]
    assert digits["max_batch_size"] == 64 and digits["backend"] == "onnxruntime"
    assert digits["input"] == [
        {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": ["1", "8", "8"]}
    ]
    assert digits["output"][0] == {"name": "logits", "data_type": "TYPE_FP32", "dims": ["10"]}
    assert digits["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    assert digits["instance_group"][0]["kind"] == "KIND_CPU"
    assert digits["instance_group"][0]["count"] == 2  # Triton's default for a CPU model: two batch workers
    assert intent["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": ["1"]}]
    assert {"name": "label", "data_type": "TYPE_STRING", "dims": ["1"]} in intent["output"]

    # load_model with a config (Triton's override): served without batching, max 8, two instances; then restored
    reloaded, restored = r["reloaded_config"], r["restored_config"]
    assert reloaded["max_batch_size"] == 8 and "dynamic_batching" not in reloaded
    assert reloaded["instance_group"][0]["count"] == 2
    assert restored["max_batch_size"] == 64 and restored["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    # with Triton's priority levels, and a request with infer(..., priority=1)
    assert (r["priority_config"]["priority_levels"], r["priority_config"]["default_priority_level"]) == ("2", "2")
    np.testing.assert_allclose(np.array(r["priority_logits"]), reference_logits(digits_bundle, x), rtol=tol, atol=tol)

    # Triton's logging extension, as tritonclient's update_log_settings drives it
    assert r["log_settings"]["log_verbose_level"] == {"uint32_param": 1} and "logging" in r["extensions"]

    # streaming: every request answered, by id; the bad ones fail alone and the stream goes on
    answers = r["stream"]
    by_id = {a["id"]: a for a in answers if "id" in a}
    assert sorted(by_id) == ["d0", "d1", "d2", "d3", "d4", "text"]
    for i in range(5):
        np.testing.assert_allclose(
            np.array(by_id[f"d{i}"]["output"]), reference_logits(digits_bundle, x), rtol=tol, atol=tol
        )
    assert len(by_id["text"]["output"]) == 2
    errors = sorted(a["error"] for a in answers if "error" in a)
    assert len(errors) == 2
    assert errors == [
        "[INVALID_ARGUMENT] input 'input': datatype FP64, expected FP32",
        "[NOT_FOUND] unknown model 'no_such_model'",
    ]

    # statistics: the stream's 5 good digits requests (3 rows each) and its 1 bad one are counted
    def digits_stats(stats):
        (s,) = [m for m in stats if m["name"] == "digits"]
        return s

    before, after = digits_stats(r["stats"]["before"]), digits_stats(r["stats"]["after"])
    inf = lambda s, phase: int(s.get("inference_stats", {}).get(phase, {}).get("count", 0))
    assert inf(after, "success") - inf(before, "success") == 5
    assert inf(after, "fail") - inf(before, "fail") == 1
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 15
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) in range(1, 6)  # batched: fewer
    assert {"digits", "intent"} <= {m["name"] for m in r["stats"]["after"]}
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    assert sum(size * n for size, n in batches.items()) == int(after["inference_count"])


def _req(model="digits", shape=(1, 1, 8, 8), datatype="FP32", raw=None, name="input", classify=None, **kw):
    req = pb.ModelInferRequest(model_name=model, **kw)
    req.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is None:
        raw = np.zeros(shape, np.float32).tobytes() if all(s >= 0 for s in shape) else b""
    req.raw_input_contents.append(raw)
    if classify is not None:  # Triton's classification extension on one output: (output, parameter)
        req.outputs.add(name=classify[0]).parameters["classification"].CopyFrom(classify[1])
    return req


@pytest.mark.parametrize(
    "req, code, message",
    [
        (
            _req(datatype="FP64", raw=np.zeros((1, 1, 8, 8)).tobytes()),
            "INVALID_ARGUMENT",
            "datatype FP64, expected FP32",
        ),
        (_req(shape=(1, 8, 8)), "INVALID_ARGUMENT", "expected [-1, 1, 8, 8]"),
        (_req(shape=(1, 1, 8, 8), raw=b"\x00" * 10), "INVALID_ARGUMENT", "10 bytes of raw data, expected 256"),
        (_req(shape=(-1, 1, 8, 8), raw=b""), "INVALID_ARGUMENT", "negative dimension"),
        (_req(name="pixels"), "INVALID_ARGUMENT", "expected inputs ['input']"),
        (_req(shape=(65, 1, 8, 8)), "INVALID_ARGUMENT", "exceeds the model's max_batch_size 64"),
        (_req(model="nope"), "NOT_FOUND", "unknown model 'nope'"),
        (_req(model_version="7"), "NOT_FOUND", "has no version '7'"),
        (
            _req(model="intent", name="text", datatype="BYTES", shape=(1, 1), raw=b"\xff\xff\x00\x00abc"),
            "INVALID_ARGUMENT",
            "declares 65535 bytes",
        ),
        (
            _req(classify=("label", pb.InferParameter(int64_param=3))),
            "INVALID_ARGUMENT",
            "output 'label': classification needs a [batch, classes] numeric output",
        ),
        (
            _req(classify=("logits", pb.InferParameter(int64_param=0))),
            "INVALID_ARGUMENT",
            "classification must be an int64 >= 1",
        ),
        (
            _req(classify=("logits", pb.InferParameter(string_param="3"))),
            "INVALID_ARGUMENT",
            "classification must be an int64 >= 1",
        ),
        (
            _req(parameters={"priority": pb.InferParameter(string_param="high")}),
            "INVALID_ARGUMENT",
            "the request: priority must be an integer >= 0",
        ),
    ],
)
def test_bad_requests_get_the_right_status_and_server_stays_ready(stub, req, code, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=10)
    assert err.value.code().name == code and message in err.value.details()
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_typed_contents_and_mixed_contents(stub):
    req = pb.ModelInferRequest(model_name="digits")
    t = req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    t.contents.fp32_contents.extend([0.5] * 64)
    resp = stub.ModelInfer(req)
    assert resp.outputs[0].name == "logits" and list(resp.outputs[0].shape) == [1, 10]
    req.raw_input_contents.append(np.zeros(64, np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req)
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "both raw_input_contents and typed" in err.value.details()
    )


def test_client_shared_memory_is_off_unless_the_server_allows_it(stub, tmp_path):
    assert "system_shared_memory" not in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
    assert not stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions
    req = _req()
    t = req.inputs[0]
    t.parameters["shared_memory_region"].string_param = "r"
    t.parameters["shared_memory_byte_size"].int64_param = 256
    del req.raw_input_contents[:]
    calls = [
        lambda: stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="r", key="/r", byte_size=1)),
        lambda: stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest()),
        lambda: stub.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name="g", byte_size=1)),
        lambda: stub.ModelInfer(req),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "--allow-client-shm" in err.value.details()
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_streams_answer_in_order_of_completion_end_cleanly_and_survive_a_client_leaving(edge_server, stub):
    assert list(stub.ModelStreamInfer(iter([]), timeout=10)) == []  # closed at once: ends at once
    n = 2 * STREAM_IN_FLIGHT  # more than the server answers at once: it reads on as answers go out
    answers = list(stub.ModelStreamInfer(iter([_req(id=str(i)) for i in range(n)]), timeout=60))
    assert sorted(int(a.infer_response.id) for a in answers) == list(range(n))
    assert all(not a.error_message and a.infer_response.outputs[0].name == "logits" for a in answers)

    def endless():
        i = 0
        while True:
            yield _req(id=str(i))
            i += 1

    call = stub.ModelStreamInfer(endless(), timeout=30)
    got = [next(call) for _ in range(50)]
    call.cancel()  # the client leaves with requests in flight
    assert all(not a.error_message for a in got)
    assert stub.ModelInfer(_req(), timeout=10).outputs[0].name == "logits"
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert "Traceback" not in edge_server.log.read_text()


def test_oversized_request_is_resource_exhausted(stub):
    n = (65 << 20) // 256
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_req(shape=(n, 1, 8, 8)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_metadata_and_metrics(edge_server, stub):
    with grpc.insecure_channel(edge_server.url) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="digits")).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="x")).status
            == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        )
    from fedge.edge_runtime.serving.backends import cuda_available

    expected = "onnxruntime-cuda" if cuda_available() else "onnxruntime-cpu"  # what `auto` picks without TensorRT
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert meta.properties["backend"] == expected and "model.fp32.onnx" in meta.properties["backend_reason"]
    stub.ModelInfer(_req())
    body = urllib.request.urlopen(f"http://127.0.0.1:{edge_server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'fedge_edge_requests_total{model="digits",status="OK",version="1"}' in body
    assert (
        f'fedge_edge_backend_info{{backend="{expected}",file="model.fp32.onnx",model="digits",version="1"}} 1.0' in body
    )
    assert "fedge_edge_batch_size_bucket" in body
    # scraped state: readiness, the serving version, an empty queue, and the process's own memory and CPU
    assert "fedge_edge_server_ready 1.0" in body and 'fedge_edge_model_ready{model="digits",version="1"} 1.0' in body
    assert 'fedge_edge_pending_requests{model="digits",version="1"} 0.0' in body
    rss = float(next(line.split()[1] for line in body.splitlines() if line.startswith("process_resident_memory_bytes")))
    assert 10e6 < rss < 4e9 and "process_cpu_seconds_total" in body


def test_hot_reload_under_load_has_zero_failures_and_switches_version(edge_server, stub, keys, tmp_path):
    from tests.edge.bundles import make_bundle

    new = make_bundle(tmp_path / "digits-v2", keys[0], "digits", seed=1)
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    versions, failures, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                versions.append(stub.ModelInfer(_req(raw=x.tobytes()), timeout=10).model_version)
            except grpc.RpcError as exc:
                failures.append(exc.code())

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    out = edge_cli(
        edge_server,
        "edge",
        "install",
        str(new),
        "--repo",
        str(edge_server.log.parent / "repo"),
        "--trust",
        str(keys[1]),
    )
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not versions or versions[-1] != "2"):
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert versions[0] == "1" and versions[-1] == "2" and len(versions) > 50
    resp = stub.ModelInfer(_req(raw=x.tobytes()))
    np.testing.assert_allclose(
        np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 10),
        reference_logits(new, x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_tampered_bundle_is_refused_while_old_version_keeps_serving(edge_server, stub, keys, digits_bundle, tmp_path):
    import shutil

    before = stub.ModelInfer(_req()).model_version
    bad = tmp_path / "bad"
    shutil.copytree(digits_bundle, bad)
    (bad / "model.fp32.onnx").write_bytes(b"not onnx")
    out = edge_cli(
        edge_server,
        "edge",
        "install",
        str(bad),
        "--repo",
        str(edge_server.log.parent / "repo"),
        "--trust",
        str(keys[1]),
    )
    assert out.returncode != 0 and "does not match its sha256" in out.stderr
    time.sleep(1.0)
    assert stub.ModelInfer(_req()).model_version == before


def test_unloaded_model_is_unavailable_until_loaded_again(edge_server, stub):
    """Also: a grpc.health.v1 Watch on the model streams SERVING -> NOT_SERVING -> SERVING as it goes."""
    from fedge.proto import grpc_service_pb2 as pb

    health = health_pb2.HealthCheckResponse
    with grpc.insecure_channel(edge_server.url) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="intent"), timeout=60)
        assert next(watch).status == health.SERVING
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="intent"), timeout=10)
        req = _req(model="intent", name="text", datatype="BYTES", shape=(1, 1), raw=b"\x05\x00\x00\x00hello")
        try:
            assert not stub.ModelReady(pb.ModelReadyRequest(name="intent")).ready
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(req, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "unloaded" in err.value.details()
            assert stub.ServerReady(pb.ServerReadyRequest()).ready  # the server itself stays ready
            assert next(watch).status == health.NOT_SERVING
        finally:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="intent"), timeout=60)
        assert stub.ModelInfer(req, timeout=10).model_name == "intent"
        assert next(watch).status == health.SERVING
        watch.cancel()


def test_a_load_with_a_model_config_sets_the_models_batching_until_the_next_load(edge_server, stub):
    """Triton's load_model(name, config=JSON): max_batch_size, dynamic batching and instance count per model;
    the repository's config.json does the same for every load; model files never come from a request."""

    def load(**params):
        req = pb.RepositoryModelLoadRequest(model_name="digits")
        for key, value in params.items():
            if isinstance(value, bytes):
                req.parameters[key].bytes_param = value
            else:
                req.parameters[key].string_param = value
        return stub.RepositoryModelLoad(req, timeout=60)

    def config():
        return stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config

    def batch(n):
        return stub.ModelInfer(_req(shape=(n, 1, 8, 8)), timeout=10)

    config_file = edge_server.repo / "digits" / "config.json"
    try:
        # as get_model_config's JSON writes it: 64-bit integers as strings, kind included
        load(
            config=json.dumps(
                {
                    "max_batch_size": 4,
                    "dynamic_batching": {"max_queue_delay_microseconds": "100"},
                    "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
                }
            )
        )
        c = config()
        assert (c.max_batch_size, c.dynamic_batching.max_queue_delay_microseconds, c.instance_group[0].count) == (
            4,
            100,
            2,
        )
        assert list(batch(4).outputs[0].shape) == [4, 10]
        with pytest.raises(grpc.RpcError) as err:
            batch(5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_size 4" in err.value.details()

        failures, answered, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    answered.append(batch(1))
                except grpc.RpcError as exc:
                    failures.append(exc.code())

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:  # reloads swap like new versions: no request in flight fails
            for cfg in ({"max_batch_size": 16, "dynamic_batching": {}}, {"max_batch_size": 8}):
                load(config=json.dumps(cfg))
                time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert failures == [] and len(answered) > 20
        # the last config has no dynamic_batching: served without batching, as Triton does
        assert not config().HasField("dynamic_batching") and config().max_batch_size == 8

        bad = {
            "not JSON": ({"config": "{max_batch_size: 4"}, "not JSON"),
            "an input": ({"config": json.dumps({"input": []})}, "not ['input'] (inputs, outputs and model files"),
            "zero": ({"config": json.dumps({"max_batch_size": 0})}, "max_batch_size must be an integer >= 1"),
            "past the release": ({"config": json.dumps({"max_batch_size": 65})}, "exceeds the 64 that model"),
            "another model": ({"config": json.dumps({"name": "intent"})}, "names model 'intent', not 'digits'"),
            "a file": ({"file:1/model.onnx": b"\x08\x01"}, "only from signed release bundles"),
            "a stray parameter": ({"colour": "red"}, "takes only the config parameter"),
        }
        for what, (params, message) in bad.items():
            with pytest.raises(grpc.RpcError) as err:
                load(**params)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details(), what
        assert config().max_batch_size == 8 and batch(8)  # still the last good config

        config_file.write_text(json.dumps({"max_batch_size": 65}))  # a file is held to the release's limit too
        with pytest.raises(grpc.RpcError) as err:
            load()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "exceeds the 64 that model" in err.value.details()
        assert config().max_batch_size == 8 and batch(8)  # the version it had keeps serving

        config_file.write_text(json.dumps({"max_batch_size": 2, "dynamic_batching": {}}))
        load()  # a plain load reads the repository's config.json
        c = config()
        assert (c.max_batch_size, c.dynamic_batching.max_queue_delay_microseconds) == (2, 500)  # delay: the flag's
    finally:
        config_file.unlink(missing_ok=True)
        load()
    c = config()
    assert (c.max_batch_size, c.dynamic_batching.max_queue_delay_microseconds, c.instance_group[0].count) == (
        64,
        500,
        2,
    )


def test_log_settings_change_what_a_running_server_logs(edge_server, stub):
    """Triton's logging extension (tritonclient update_log_settings): all of a request's changes or none."""
    import re

    def settings(**changes):
        req = pb.LogSettingsRequest()
        for key, value in changes.items():
            kind = (
                "bool_param"
                if isinstance(value, bool)
                else "uint32_param"
                if isinstance(value, int)
                else "string_param"
            )
            setattr(req.settings[key], kind, value)
        resp = stub.LogSettings(req, timeout=10)
        return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in resp.settings.items()}

    def logged_by_a_reload() -> str:
        before = len(edge_server.log.read_text())
        stub.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name="intent"), timeout=60
        )  # logs "serving intent"
        time.sleep(0.3)
        return edge_server.log.read_text()[before:]

    assert settings() == {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "default",
    }
    try:
        assert settings(log_info=False)["log_info"] is False
        assert "serving intent" not in logged_by_a_reload()
        assert settings(log_info=True, log_format="ISO8601")["log_format"] == "ISO8601"
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO fedge.edge: serving intent", logged_by_a_reload())
        bad = {
            "log_verbose_level": ({"log_verbose_level": "2"}, "must be a int"),
            "log_file": ({"log_file": "/tmp/x.log"}, "log_file cannot be changed"),
            "unknown": ({"log_colour": True}, "unknown log setting 'log_colour'"),
            "format": ({"log_info": False, "log_format": "xml"}, "log_format must be one of"),
        }
        for what, (changes, message) in bad.items():
            with pytest.raises(grpc.RpcError) as err:
                settings(**changes)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details(), what
        assert settings()["log_info"] is True  # the refused request changed nothing
    finally:
        settings(log_info=True, log_format="default")


def test_a_port_in_use_is_refused_not_shared(edge_server, keys, tmp_path):
    """gRPC turns on SO_REUSEPORT by default: a second server on the same port would start and silently take
    some of the connections. fedge's refuses to start, saying why."""
    try:
        out = edge_cli(
            edge_server,
            "edge",
            "serve",
            "--repo",
            str(tmp_path / "repo"),
            "--trust",
            str(keys[1]),
            "--host",
            "127.0.0.1",
            "--port",
            str(edge_server.port),
            "--metrics-port",
            "0",
            "--http-port",
            "0",
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a second server started on a port already in use")
    assert (
        out.returncode == 2
        and f"cannot serve gRPC on 127.0.0.1:{edge_server.port}: the address is in use" in out.stderr
    )


def test_fedge_edge_predict_text_npy_and_errors(edge_server, stub, tmp_path):
    x = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    out = edge_cli(
        edge_server, "edge", "predict", "--url", edge_server.url, "--model", "digits", "--npy", str(tmp_path / "x.npy")
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    served = stub.ModelInfer(_req(shape=(2, 1, 8, 8), raw=x.tobytes()))  # whichever version the server runs now
    logits = np.frombuffer(served.raw_output_contents[0], np.float32).reshape(2, 10)
    np.testing.assert_allclose(np.array(got["logits"]), logits, rtol=1e-5, atol=1e-5)
    assert got["label"] == [[str(int(i))] for i in logits.argmax(1)]
    out = edge_cli(
        edge_server,
        "edge",
        "predict",
        "--url",
        edge_server.url,
        "--model",
        "intent",
        "--text",
        "I lost my card",
        "--text",
        "how much data is left",
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert np.array(got["logits"]).shape == (2, 12) and len(got["label"]) == 2
    from fedge.core.tasks import get_task

    assert all(row[0] in get_task("intent").labels for row in got["label"])
    out = edge_cli(
        edge_server,
        "edge",
        "predict",
        "--url",
        edge_server.url,
        "--model",
        "intent",
        "--text",
        "I lost my card",
        "--top",
        "2",
    )
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["logits"]  # only the asked output, its 2 best classes
    scores = [float(t.split(":")[0]) for t in row]
    assert len(row) == 2 and scores[0] >= scores[1] and all(t.split(":")[2] in get_task("intent").labels for t in row)
    out = edge_cli(edge_server, "edge", "predict", "--url", edge_server.url, "--model", "nope", "--text", "hi")
    assert out.returncode == 2 and out.stderr.strip() == "fedge edge predict: NOT_FOUND: unknown model 'nope'"


def test_models_lists_versions_and_rollback_switches_the_running_server_back(edge_server, stub, keys, tmp_path):
    from tests.edge.bundles import make_bundle

    repo = str(edge_server.log.parent / "repo")

    def listed():
        out = edge_cli(edge_server, "edge", "models", "--repo", repo, "--json")
        assert out.returncode == 0, out.stderr
        return {r["model"]: r for r in json.loads(out.stdout)}

    def served_version(want: str) -> str:
        deadline = time.monotonic() + 30
        while (got := stub.ModelInfer(_req()).model_version) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        return got

    before = listed()["digits"]["current"]
    new = make_bundle(tmp_path / "d", keys[0], "digits", seed=3)
    out = edge_cli(edge_server, "edge", "install", str(new), "--repo", repo, "--trust", str(keys[1]))
    assert out.returncode == 0, out.stderr
    now = listed()["digits"]
    assert now["current"] == before + 1 and now["versions"][-2:] == [before, before + 1] and now["task"] == "digits"
    assert served_version(str(before + 1)) == str(before + 1)
    out = edge_cli(edge_server, "edge", "rollback", "digits", "--repo", repo)
    assert out.returncode == 0 and f"now serving version {before}" in out.stdout, out.stderr
    assert listed()["digits"]["current"] == before
    assert served_version(str(before)) == str(before)  # the running server switched back by itself


def test_log_flags_set_what_the_server_starts_with(tmp_path, keys, digits_bundle):
    """Triton's --log-verbose / --log-format / --log-info: read back over the logging extension, and seen in the
    log (verbose 1 writes the HTTP access log; ISO 8601 timestamps in UTC)."""
    import re

    from tests.edge.conftest import EdgeProcess, fedge

    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    server = EdgeProcess(
        repo,
        keys[1],
        tmp_path / "server.log",
        "--log-verbose",
        "1",
        "--log-format",
        "ISO8601",
        "--log-warning",
        "false",
    )
    try:
        with grpc.insecure_channel(server.url) as ch:
            resp = pb_grpc.GRPCInferenceServiceStub(ch).LogSettings(pb.LogSettingsRequest(), timeout=10)
        got = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in resp.settings.items()}
        assert (got["log_verbose_level"], got["log_format"], got["log_warning"], got["log_info"]) == (
            1,
            "ISO8601",
            False,
            True,
        )
        assert urllib.request.urlopen(f"http://{server.http_url}/v2/health/live", timeout=10).status == 200
        time.sleep(0.3)
        assert re.search(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ DEBUG fedge.edge: HTTP GET /v2/health/live -> 200", server.log.read_text()
        ), server.log.read_text()[-2000:]
    finally:
        server.stop()
    out = fedge("edge", "serve", "--repo", str(repo), "--trust", str(keys[1]), "--log-verbose", "-1", timeout=60)
    assert out.returncode == 2 and "--log-verbose must be >= 0" in out.stderr
