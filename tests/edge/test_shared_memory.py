"""Triton's system shared memory extension against a real ``fedge edge serve --allow-client-shm=true``: tritonclient
unchanged for the happy path, raw gRPC for every way a region or a tensor in it can be wrong."""

import json
import os
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.core.procs import pid_alive
from fedge.edge_runtime.serving.shared_memory import SHM_DIR, is_local_peer
from fedge.proto import grpc_service_pb2 as pb
from tests.edge.bundles import reference_logits
from tests.edge.conftest import serving, triton_script

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm (POSIX shared memory) on this OS")


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory, keys, digits_bundle, intent_bundle):
    yield from serving(
        tmp_path_factory.mktemp("edge-shm"), keys, (digits_bundle, intent_bundle), "--allow-client-shm=true"
    )


@pytest.fixture
def stub(shm_server):
    from fedge.proto import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(shm_server.url) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)


@pytest.fixture
def shm_object():
    """POSIX shared memory objects made the way shm_open makes them (files in /dev/shm), removed afterwards."""
    made = []

    def make(size: int, fill: bytes = b"\0") -> tuple[str, Path]:
        path = SHM_DIR / f"fedge_pytest_{os.getpid()}_{len(made)}"
        path.write_bytes((fill * size)[:size])
        made.append(path)
        return "/" + path.name, path

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def test_tritonclient_shared_memory_works_unchanged(shm_server, stub, digits_bundle, tmp_path):
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = triton_script("tests.edge.triton_shm_check", shm_server.url, str(tmp_path / "x.npy"))
    assert "system_shared_memory" in r["extensions"] and "cuda_shared_memory" not in r["extensions"]
    assert r["cuda_status"] == {}
    regions = r["status"]["regions"]
    assert sorted(regions) == ["digits_in", "digits_out", "text_in"]
    assert regions["digits_in"]["byte_size"] == str(x.nbytes) and regions["digits_in"]["key"].endswith("_in")

    # the logits landed in shared memory at the offset asked, and nothing around them was touched
    logits = reference_logits(digits_bundle, x)
    np.testing.assert_allclose(np.array(r["logits"]), logits, rtol=1e-5, atol=1e-5)
    assert r["untouched"]
    assert r["logits_output"] == {"region": "digits_out", "byte_size": 3 * 10 * 4, "offset": 64, "raw": 0}
    labels = json.loads((digits_bundle / "manifest.json").read_text())["labels"]
    assert r["labels"] == [labels[i] for i in logits.argmax(1)]  # the wire output beside the shm one

    # the text model read its BYTES input from shared memory and wrote its BYTES labels back: same as over the wire
    text = np.array([[b"I lost my credit card yesterday"], [b"how much data have I used this month"]], dtype=object)
    from fedge.edge_runtime.common.datatypes import serialize_bytes

    wire = stub.ModelInfer(
        pb.ModelInferRequest(
            model_name="intent",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2, 1])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
            raw_input_contents=[serialize_bytes(text)],
        )
    )
    from fedge.edge_runtime.common.datatypes import deserialize_bytes

    assert r["intent_labels"] == [v.decode() for v in deserialize_bytes(wire.raw_output_contents[0], 2)]
    assert r["intent_label_bytes"] == len(wire.raw_output_contents[0])

    e = r["errors"]
    assert e["cuda_register"][0] == "StatusCode.UNIMPLEMENTED" and "system shared memory" in e["cuda_register"][1]
    assert e["twice"][0] == "StatusCode.ALREADY_EXISTS"
    assert (
        e["output_too_small"][0] == "StatusCode.INVALID_ARGUMENT"
        and "do not fit the 16 bytes" in e["output_too_small"][1]
    )
    assert (
        e["unregistered"][0] == "StatusCode.INVALID_ARGUMENT"
        and "'digits_in' is not registered" in e["unregistered"][1]
    )
    assert r["status_after_one"] == ["digits_out", "text_in"]
    assert r["status_after_all"] == {}


def _shm_input(region: str, byte_size: int, offset: int | None = None, shape=(1, 1, 8, 8)):
    t = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(shape))
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_byte_size"].int64_param = byte_size
    if offset is not None:
        t.parameters["shared_memory_offset"].int64_param = offset
    return t


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_regions_and_tensors_are_refused_and_the_server_stays_up(shm_server, stub, shm_object, tmp_path):
    def register(name, key, size, offset=0):
        return stub.SystemSharedMemoryRegister(
            pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=offset, byte_size=size)
        )

    key, path = shm_object(1024)
    inv = grpc.StatusCode.INVALID_ARGUMENT
    # keys that are not POSIX shared memory names, or name no object here, or reach outside /dev/shm
    for bad in ("/../../etc/passwd", "/a/b", "..", "/"):
        code, msg = _code(lambda bad=bad: register("r", bad, 16))
        assert code == inv and "is not a POSIX shared memory name" in msg, (bad, msg)
    assert "no shared memory object" in _code(lambda: register("r", "/fedge_no_such_object", 16))[1]
    link = SHM_DIR / f"fedge_pytest_link_{os.getpid()}"
    (tmp_path / "secret").write_bytes(b"x" * 64)
    link.symlink_to(tmp_path / "secret")
    try:
        code, msg = _code(lambda: register("r", "/" + link.name, 16))
        assert code == inv and "unable to open" in msg  # O_NOFOLLOW: a link in /dev/shm leads nowhere
    finally:
        link.unlink()
    code, msg = _code(lambda: register("r", key, 1000, offset=100))
    assert code == inv and "past the end" in msg and "(1024 bytes)" in msg
    assert _code(lambda: register("", key, 16))[0] == inv

    register("r", key, 512, offset=256)
    assert _code(lambda: register("r", key, 16))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert (
        _code(lambda: stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="nope")))[0]
        == grpc.StatusCode.NOT_FOUND
    )

    def infer(*inputs, raw=(), outputs=()):
        return stub.ModelInfer(
            pb.ModelInferRequest(
                model_name="digits", inputs=list(inputs), outputs=list(outputs), raw_input_contents=list(raw)
            )
        )

    x = np.random.default_rng(2).random((1, 1, 8, 8), dtype=np.float32)
    with open(path, "r+b") as f:  # the region starts 256 bytes into the object; the tensor 32 bytes into the region
        f.seek(256 + 32)
        f.write(x.tobytes())
    good = infer(_shm_input("r", 256, offset=32))
    wire = infer(
        pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 1, 8, 8]), raw=[x.tobytes()]
    )
    assert good.raw_output_contents[0] == wire.raw_output_contents[0]

    cases = {
        "wrong byte size": (lambda: infer(_shm_input("r", 200)), "200 bytes of raw data, expected 256"),
        "past the region": (lambda: infer(_shm_input("r", 256, offset=300)), "outside shared memory region 'r'"),
        "half the parameters": (
            lambda: infer(
                pb.ModelInferRequest.InferInputTensor(
                    name="input",
                    datatype="FP32",
                    shape=[1, 1, 8, 8],
                    parameters={"shared_memory_region": pb.InferParameter(string_param="r")},
                )
            ),
            "needs both",
        ),
        "raw data too": (
            lambda: infer(_shm_input("r", 256), raw=[x.tobytes()]),
            "raw_input_contents has 1 entries for 0",
        ),
        "unknown region": (lambda: infer(_shm_input("nope", 256)), "'nope' is not registered"),
        "output region too small": (
            lambda: infer(
                _shm_input("r", 256),
                outputs=[
                    pb.ModelInferRequest.InferRequestedOutputTensor(
                        name="logits",
                        parameters={
                            "shared_memory_region": pb.InferParameter(string_param="r"),
                            "shared_memory_byte_size": pb.InferParameter(int64_param=8),
                        },
                    )
                ],
            ),
            "do not fit the 8 bytes",
        ),
    }
    for what, (call, message) in cases.items():
        code, details = _code(call)
        assert code == inv and message in details, (what, code, details)

    # the client shrinks its object after registering: a clear error, not a SIGBUS that kills the server
    os.truncate(path, 100)
    code, details = _code(lambda: infer(_shm_input("r", 256)))
    assert code == inv and "smaller than when region 'r' was registered" in details
    assert stub.ServerReady(pb.ServerReadyRequest()).ready and pid_alive(shm_server.proc.pid)
    stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
    assert not stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions
    assert (
        infer(
            pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 1, 8, 8]), raw=[x.tobytes()]
        ).raw_output_contents[0]
        == wire.raw_output_contents[0]
    )


@pytest.mark.parametrize(
    "peer, local",
    [
        ("ipv4:127.0.0.1:50000", True),
        ("ipv4:127.8.9.1:1", True),
        ("ipv6:[::1]:50000", True),
        ("ipv6:[::ffff:127.0.0.1]:5", True),
        ("unix:/run/fedge.sock", True),
        ("ipv4:10.1.2.3:50000", False),
        ("ipv6:[2001:db8::1]:443", False),
        ("ipv4:192.168.0.7:8001", False),
        ("garbage", False),
    ],
)
def test_only_clients_on_this_host_count_as_local(peer, local):
    assert is_local_peer(peer) is local


def test_inputs_in_shared_memory_and_on_the_wire_mix_in_one_request(shm_object):
    """Only the inputs not in shared memory have a raw_input_contents entry (tritonclient sends none for the
    others), so entry i is not input i once one input is in shared memory."""
    from fedge.edge_runtime.distribution.bundle import TensorDesc
    from fedge.edge_runtime.frontends.grpc_codec import decode_inputs
    from fedge.edge_runtime.serving.shared_memory import SharedMemory

    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.array([[7], [8], [9]], dtype=np.int64)
    key, path = shm_object(64)
    path.write_bytes(a.tobytes() + b"\0" * (64 - a.nbytes))
    registry = SharedMemory(allowed=True)
    registry.register("a", key, 0, 64, "unix:local")
    try:
        req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b.tobytes()])
        t = req.inputs.add(name="a", datatype="FP32", shape=[3, 2])
        t.parameters["shared_memory_region"].string_param = "a"
        t.parameters["shared_memory_byte_size"].int64_param = a.nbytes
        req.inputs.add(name="b", datatype="INT64", shape=[3, 1])
        expected = (TensorDesc("a", "FP32", (-1, 2)), TensorDesc("b", "INT64", (-1, 1)))
        got = decode_inputs(req, expected, 8, registry.client("ipv4:127.0.0.1:1"))
        np.testing.assert_array_equal(got["a"], a)
        np.testing.assert_array_equal(got["b"], b)
        from fedge.edge_runtime.common.errors import PermissionDenied

        with pytest.raises(PermissionDenied, match="only for clients on this host"):
            decode_inputs(req, expected, 8, registry.client("ipv4:10.0.0.9:1"))
    finally:
        registry.close()


def test_shared_memory_over_http_as_tritonclient_http_uses_it(shm_server, shm_object, digits_bundle):
    """Register, infer with the input and the logits in one region, status, unregister: Triton's HTTP routes."""
    import http.client

    x = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    key, path = shm_object(x.nbytes + 80)
    path.write_bytes(x.tobytes() + bytes(80))
    conn = http.client.HTTPConnection("127.0.0.1", shm_server.http_port, timeout=10)

    def call(method: str, url: str, doc=None) -> tuple[int, object]:
        conn.request(method, url, json.dumps(doc).encode() if doc is not None else None)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if body else None

    assert call(
        "POST", "/v2/systemsharedmemory/region/io/register", {"key": key, "offset": 0, "byte_size": x.nbytes + 80}
    ) == (200, None)
    status, regions = call("GET", "/v2/systemsharedmemory/status")
    assert status == 200 and regions == [{"name": "io", "key": key, "offset": 0, "byte_size": x.nbytes + 80}]
    region = {"shared_memory_region": "io"}
    status, resp = call(
        "POST",
        "/v2/models/digits/infer",
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 1, 8, 8],
                    "parameters": {**region, "shared_memory_byte_size": x.nbytes},
                }
            ],
            "outputs": [
                {
                    "name": "logits",
                    "parameters": {**region, "shared_memory_byte_size": 80, "shared_memory_offset": x.nbytes},
                },
                {"name": "label"},
            ],
        },
    )
    assert status == 200, resp
    logits, label = resp["outputs"]
    assert "data" not in logits and logits["parameters"]["shared_memory_byte_size"] == 80
    written = np.frombuffer(path.read_bytes()[x.nbytes :], dtype=np.float32).reshape(2, 10)
    expected = reference_logits(digits_bundle, x)
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-6)
    labels = json.loads((digits_bundle / "manifest.json").read_text())["labels"]
    assert label["data"] == [labels[i] for i in expected.argmax(1)]
    assert call("POST", "/v2/systemsharedmemory/region/io/unregister") == (200, None)
    assert call("GET", "/v2/systemsharedmemory/status") == (200, [])
    status, err = call("GET", "/v2/systemsharedmemory/region/io/status")
    assert status == 404 and "io" in err["error"]
    conn.close()
