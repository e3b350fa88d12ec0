"""Edge fuzz: property-based ModelInfer requests (hypothesis) against a real `fedge edge serve` process. Every
reply is OK or one of the documented error codes, and the server stays ready and correct throughout."""

import json

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedge.edge_runtime.common.datatypes import NUMPY
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.system
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
    "",
    "fp32",
    "STRING",
]
DIMS = st.one_of(st.sampled_from([-1, 0, 1, 2, 8, 64, 65, 2**31, 2**62, -(2**40)]), st.integers(-3, 70))
TYPED = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]


def _bytes_tensor(items: list[bytes], corrupt: int | None) -> bytes:
    out = b"".join(len(b).to_bytes(4, "little") + b for b in items)
    if corrupt is not None and out:
        pos = corrupt % len(out)
        out = out[:pos] + bytes([out[pos] ^ 0xFF]) + out[pos + 1 :]
    return out


@st.composite
def mutated_valid(draw):
    """A valid request for digits or intent with 0-3 mutations: reaches decoding, batching and the backend."""
    text = draw(st.booleans())
    if text:
        items = draw(st.lists(st.text(max_size=30).map(lambda t: t.encode("utf-8", "replace")), min_size=1, max_size=4))
        req = pb.ModelInferRequest(model_name="intent")
        req.inputs.add(name="text", datatype="BYTES", shape=[len(items), 1])
        req.raw_input_contents.append(_bytes_tensor(items, None))
    else:
        n = draw(st.integers(1, 4))
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="input", datatype="FP32", shape=[n, 1, 8, 8])
        req.raw_input_contents.append(draw(st.binary(min_size=n * 256, max_size=n * 256)))
    t = req.inputs[0]
    for m in draw(
        st.lists(
            st.sampled_from(
                ["dtype", "shape", "truncate", "extend", "corrupt", "param", "typed", "extra", "version", "outputs"]
            ),
            max_size=3,
        )
    ):
        if m == "dtype":
            t.datatype = draw(st.sampled_from(DATATYPES))
        elif m == "shape":
            t.shape[draw(st.integers(0, len(t.shape) - 1))] = draw(DIMS)
        elif m == "truncate":
            raw = req.raw_input_contents[0]
            req.raw_input_contents[0] = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
        elif m == "extend":
            req.raw_input_contents[0] += draw(st.binary(min_size=1, max_size=64))
        elif m == "corrupt" and req.raw_input_contents[0]:
            raw = bytearray(req.raw_input_contents[0])
            raw[draw(st.integers(0, min(3, len(raw) - 1)))] = 0xFF  # a BYTES length prefix (or a float byte)
            req.raw_input_contents[0] = bytes(raw)
        elif m == "param":
            req.parameters[draw(st.text(min_size=1, max_size=5))].int64_param = draw(st.integers(-9, 9))
        elif m == "typed":
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=300)))
        elif m == "extra":
            req.inputs.add(name=draw(st.sampled_from(["input", "text", "x"])), datatype="FP32", shape=[1])
        elif m == "version":
            req.model_version = draw(st.sampled_from(["1", "2", "x", ""]))
        elif m == "outputs":
            req.outputs.add(name=draw(st.sampled_from(["logits", "label", "nope"])))
    return req


@st.composite
def random_requests(draw):
    req = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["digits", "intent", "", "nope", "digits/1", "ü" * 3])),
        model_version=draw(st.sampled_from(["", "1", "2", "0", "-1", "x"])),
        id=draw(st.text(max_size=8)),
    )
    for key in draw(st.lists(st.text(min_size=1, max_size=6), max_size=2)):
        req.parameters[key].string_param = draw(st.text(max_size=6))
    n_inputs = draw(st.integers(0, 3))
    use_raw = draw(st.booleans())
    for _ in range(n_inputs):
        name = draw(st.sampled_from(["input", "text", "", "x"]))
        dtype = draw(st.sampled_from(DATATYPES))
        shape = draw(st.lists(DIMS, max_size=5))
        t = req.inputs.add(name=name, datatype=dtype, shape=shape)
        if draw(st.booleans()):
            t.parameters["binary_data_size"].int64_param = draw(st.integers(-5, 5000))
        if use_raw:
            kind = draw(st.sampled_from(["exact", "random", "bytes"]))
            if kind == "exact" and dtype == "FP32" and all(0 <= s <= 64 for s in shape):
                raw = np.zeros([s for s in shape], np.float32).tobytes()
            elif kind == "bytes":
                raw = _bytes_tensor(
                    draw(st.lists(st.binary(max_size=40), max_size=4)), draw(st.one_of(st.none(), st.integers(0, 1000)))
                )
            else:
                raw = draw(st.binary(max_size=600))
            req.raw_input_contents.append(raw)
        else:
            field = draw(st.sampled_from(TYPED))
            values = draw(st.lists(st.integers(0, 255), max_size=70))
            if field == "bytes_contents":
                getattr(t.contents, field).extend(bytes([v]) * 3 for v in values)
            elif field == "bool_contents":
                getattr(t.contents, field).extend(bool(v % 2) for v in values)
            else:
                getattr(t.contents, field).extend(values)
    if draw(st.booleans()):  # mismatched raw/typed: raw contents for some inputs that also carry typed contents
        req.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(st.sampled_from(["logits", "label", "nope", ""]), max_size=3)):
        req.outputs.add(name=name)
    return req


def test_fuzzed_requests_get_ok_or_a_documented_code_and_the_server_stays_ready(edge_server, report):
    counts = {"cases": 0, "ok": 0, "errors": {}}
    with grpc.insecure_channel(edge_server.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)

        @settings(
            max_examples=2000, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(st.one_of(mutated_valid(), mutated_valid(), random_requests()))
        def check(req):
            counts["cases"] += 1
            try:
                stub.ModelInfer(req, timeout=20)
                counts["ok"] += 1
            except grpc.RpcError as exc:
                assert exc.code() in DOCUMENTED, (exc.code(), exc.details(), req)
                counts["errors"][exc.code().name] = counts["errors"].get(exc.code().name, 0) + 1

        check()
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        ok = pb.ModelInferRequest(model_name="digits")
        ok.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        ok.raw_input_contents.append(np.zeros((1, 1, 8, 8), np.float32).tobytes())
        assert len(stub.ModelInfer(ok, timeout=10).raw_output_contents[0]) == 40
    assert counts["cases"] >= 2000 and edge_server.proc.poll() is None
    assert counts["ok"] > 200 and counts["errors"].get("INVALID_ARGUMENT", 0) > 200  # deep paths were reached
    report["edge_fuzz"] = counts


# -- the same over the KServe v2 REST endpoint --------------------------------------------------------------------
HTTP_DOCUMENTED = {200, 400, 404, 405, 413, 503}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _typed_values(t) -> list | None:
    field = next((f.name for f, _ in t.contents.ListFields()), None)
    if field is None:
        return None
    values = list(getattr(t.contents, field))
    return [v.decode("latin-1") for v in values] if field == "bytes_contents" else values


@st.composite
def http_requests(draw) -> tuple[str, str, dict, bytes]:
    """(method, path, headers, body): fuzzed gRPC requests translated the way tritonclient.http sends them
    (binary tensors after the JSON, or JSON data), then mutated at the JSON or byte level; or random JSON bodies;
    or random routes."""
    kind = draw(st.sampled_from(["translated", "translated", "translated", "json", "route"]))
    if kind == "route":
        path = "/" + "/".join(
            draw(
                st.lists(
                    st.sampled_from(
                        [
                            "v2",
                            "models",
                            "digits",
                            "intent",
                            "versions",
                            "1",
                            "x",
                            "infer",
                            "ready",
                            "stats",
                            "config",
                            "..",
                            "%00",
                            "ü",
                        ]
                    ),
                    max_size=6,
                )
            )
        )
        return draw(st.sampled_from(["GET", "POST", "PUT", "HEAD"])), path, {}, b""
    if kind == "json":
        body = json.dumps(draw(JSON)).encode()
        return "POST", f"/v2/models/{draw(st.sampled_from(['digits', 'intent', 'nope']))}/infer", {}, body
    req = draw(st.one_of(mutated_valid(), mutated_valid(), random_requests()))
    doc: dict = {"inputs": []}
    binary = b""
    raw = list(req.raw_input_contents)
    for i, t in enumerate(req.inputs):
        tensor = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        values = _typed_values(t)
        dtype = NUMPY.get(t.datatype)
        if i < len(raw) and dtype is not None and len(raw[i]) % dtype.itemsize == 0 and draw(st.booleans()):
            tensor["data"] = np.frombuffer(raw[i], dtype).tolist()  # as JSON (random floats: NaN, Infinity too)
        elif i < len(raw):
            tensor["parameters"] = {"binary_data_size": len(raw[i])}
            binary += raw[i]
        elif values is not None:
            tensor["data"] = values
        doc["inputs"].append(tensor)
    if req.outputs:
        doc["outputs"] = [{"name": o.name, "parameters": {"binary_data": draw(st.booleans())}} for o in req.outputs]
    head = json.dumps(doc).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
    body = head + binary
    mutation = draw(st.sampled_from(["none", "none", "none", "truncate", "header", "garbage"]))
    if mutation == "truncate":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif mutation == "header":
        headers["Inference-Header-Content-Length"] = draw(st.sampled_from(["-1", "x", "0", str(len(body) + 5), "1e3"]))
    elif mutation == "garbage":
        pos = draw(st.integers(0, max(len(head) - 1, 0)))
        body = body[:pos] + draw(st.binary(min_size=1, max_size=4)) + body[pos + 1 :]
    name = req.model_name or "digits"
    return (
        "POST",
        f"/v2/models/{name}" + (f"/versions/{req.model_version}" if req.model_version else "") + "/infer",
        headers,
        body,
    )


def test_fuzzed_http_requests_get_a_documented_status_and_the_server_stays_ready(edge_server, report):
    import http.client
    from urllib.parse import quote

    counts: dict = {"cases": 0, "statuses": {}}
    conn = http.client.HTTPConnection("127.0.0.1", edge_server.http_port, timeout=20)

    @settings(
        max_examples=1000, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(http_requests())
    def check(case):
        method, path, headers, body = case
        counts["cases"] += 1
        conn.request(method, quote(path, safe="/%"), body=body or None, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        assert resp.status in HTTP_DOCUMENTED, (resp.status, text[:300], case)
        if resp.status != 200 and method != "HEAD":
            assert json.loads(text)["error"], text
        counts["statuses"][resp.status] = counts["statuses"].get(resp.status, 0) + 1

    check()
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().status == 200
    conn.close()
    assert edge_server.proc.poll() is None
    assert counts["statuses"].get(200, 0) > 50 and counts["statuses"].get(400, 0) > 100  # deep paths were reached
    report["edge_fuzz_http"] = {
        "cases": counts["cases"],
        "statuses": {str(k): v for k, v in counts["statuses"].items()},
    }
