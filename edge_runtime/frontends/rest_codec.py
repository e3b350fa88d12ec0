"""KServe v2 REST inference bodies <-> the data plane's InferRequest and InferResult, the same the gRPC front end
makes, so a request over HTTP goes through exactly the checks, batching and statistics of one over gRPC.

A request is JSON, optionally followed by binary tensors (Triton's binary tensor data extension, what
tritonclient.http sends by default): the header ``Inference-Header-Content-Length`` gives the JSON's size, and
each input with the parameter ``binary_data_size`` takes that many bytes from what follows, in input order.
Inputs may also be JSON (``"data"``: a flat or nested list; BYTES as strings). Outputs come back as JSON
``"data"``, or binary when the request says ``"binary_data_output": true`` or an output's ``"binary_data"``
does."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fedge.edge_runtime.common.datatypes import BYTES, NUMPY, datatype_of, serialize_bytes
from fedge.edge_runtime.common.errors import InvalidInput, TooLarge
from fedge.edge_runtime.serving.inference import InferRequest, InferResult, InputTensor, RequestedOutput, shm_ref

INT64_MAX, UINT64_MAX = (1 << 63) - 1, (1 << 64) - 1
HTTP_ONLY = ("binary_data_size", "binary_data", "binary_data_output")  # not passed on: HTTP framing only


class OutputForm:
    """Which outputs a request wants binary."""

    def __init__(self, default: bool, chosen: dict[str, bool]) -> None:
        self.default, self.chosen = default, chosen

    def binary(self, name: str) -> bool:
        return self.chosen.get(name, self.default)


MAX_JSON_BYTES = 4 << 20  # the JSON part of an inference request, at most: tensors past that travel as binary data


def parse_infer(
    body: bytes, header_length: str | None, model: str, version: str, max_json_bytes: int = MAX_JSON_BYTES
) -> tuple[InferRequest, OutputForm]:
    json_part, binary = _split(body, header_length)
    if len(json_part) > max_json_bytes:  # parsing JSON holds the GIL: what it may cost the server is bounded
        raise TooLarge(
            f"the request's JSON is {len(json_part)} bytes, over the limit of {max_json_bytes}: send the"
            " tensors as binary data (binary_data_size and Inference-Header-Content-Length, what"
            " tritonclient.http does by default)"
        )
    doc = load_json(json_part, "inference request")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInput("the request id must be a string")
    params = _object(doc.get("parameters"), "request parameters")
    default = params.pop("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidInput("parameter binary_data_output must be true or false")
    req = InferRequest(model, version, req_id or "", [], [], check_parameters(params, "request"))
    offset = 0
    for t in _list(doc.get("inputs"), "inputs"):
        offset = _add_input(req, t, binary, offset)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size")
    chosen = {}
    for o in _list(doc.get("outputs", []), "outputs"):
        name = _field(o, "name", str, "a requested output")
        oparams = _object(o.get("parameters"), f"output {name!r} parameters")
        binary_flag = oparams.pop("binary_data", None)
        if binary_flag is not None:
            if not isinstance(binary_flag, bool):
                raise InvalidInput(f"output {name!r}: binary_data must be true or false")
            chosen[name] = binary_flag
        req.outputs.append(RequestedOutput(name, check_parameters(oparams, f"output {name!r}")))
    return req, OutputForm(default, chosen)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length[:40]!r} is not a size within the {len(body)}-byte body"
        )
    n = int(header_length)
    return body[:n], body[n:]


def _add_input(req: InferRequest, t, binary: bytes, offset: int) -> int:
    if not isinstance(t, dict):
        raise InvalidInput("each input must be a JSON object with name, datatype, shape and data")
    name = _field(t, "name", str, "an input")
    datatype = _field(t, "datatype", str, f"input {name!r}")
    shape = _field(t, "shape", list, f"input {name!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of integers, got {shape}")
    params = _object(t.get("parameters"), f"input {name!r} parameters")
    size = params.pop("binary_data_size", None)
    params = check_parameters(params, f"input {name!r}")
    sources = [
        s
        for s, present in (
            ("data", "data" in t),
            ("binary_data_size", size is not None),
            ("shared memory", "shared_memory_region" in params),
        )
        if present
    ]
    if len(sources) != 1:
        raise InvalidInput(
            f"input {name!r} must carry its data in exactly one way (data, binary_data_size or"
            f" shared memory), got {sources or 'none'}"
        )
    tensor = InputTensor(name, datatype, tuple(shape), shm=shm_ref(f"input {name!r}", params))
    req.inputs.append(tensor)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size!r} does not fit the {len(binary) - offset}"
                " bytes of binary data left"
            )
        tensor.raw = binary[offset : offset + size]
        return offset + size
    if "data" in t:
        tensor.raw = json_tensor(name, datatype, t["data"])
    return offset


def json_tensor(name: str, datatype: str, data) -> bytes:
    """A JSON ``data`` list as the raw bytes of ``datatype`` (element count and shape are checked later, by the
    same code as gRPC requests). Types are strict, as in Triton: no floats for integer inputs, no wrap-around."""
    if datatype == BYTES:
        items = list(_flat(data))
        if not all(isinstance(s, str) for s in items):
            raise InvalidInput(f"input {name!r}: BYTES data must be strings")
        return serialize_bytes(np.array(items, dtype=object))
    dtype = NUMPY.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"input {name!r}: datatype {datatype!r} cannot be sent as JSON data"
            + (" (send it as binary data)" if datatype == "BF16" else "")
        )
    try:
        arr = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"input {name!r}: data is not a regular (nested) list") from None
    allowed = "b" if dtype.kind == "b" else "iu" if dtype.kind in "iu" else "iuf"
    if arr.size and arr.dtype.kind not in allowed:
        raise InvalidInput(
            f"input {name!r}: {datatype} data must be "
            + {"b": "true/false", "iu": "integers", "iuf": "numbers"}[allowed]
        )
    if arr.size and dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]  # an integer dtype (kind checked above)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise InvalidInput(f"input {name!r}: a value does not fit {datatype}")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def _flat(data):
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def render_infer(result: InferResult, form: OutputForm) -> tuple[bytes, int | None]:
    """The response body and, when binary outputs follow the JSON, the JSON's size for the header
    ``Inference-Header-Content-Length``."""
    outputs: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"model_name": result.model, "model_version": result.version, "outputs": outputs}
    if result.id:
        doc["id"] = result.id
    tail = []
    for name, arr in result.outputs.items():
        datatype = datatype_of(arr)
        o: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        placed = result.in_shm.get(name)
        if placed is not None:  # written to the client's region, nothing to send
            ref, size = placed
            o["parameters"] = {
                "shared_memory_region": ref.region,
                "shared_memory_byte_size": size,
                **({"shared_memory_offset": ref.offset} if ref.offset else {}),
            }
        elif form.binary(name):
            raw = serialize_bytes(arr) if datatype == BYTES else np.ascontiguousarray(arr).tobytes()
            o["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            o["data"] = _json_values(name, arr)
        outputs.append(o)
    head = json.dumps(doc).encode()
    return (head + b"".join(tail), len(head)) if tail else (head, None)


def _json_values(name: str, arr: np.ndarray) -> list:
    if datatype_of(arr) == BYTES:
        try:
            return [b.decode("utf-8") if isinstance(b, (bytes, bytearray)) else str(b) for b in arr.reshape(-1)]
        except UnicodeDecodeError:
            raise InvalidInput(f"output {name!r} holds bytes that are not UTF-8; ask for it with binary_data") from None
    return arr.reshape(-1).tolist()


def check_parameters(params: dict, where: str) -> dict:
    """JSON parameters as the Open Inference Protocol's InferParameter allows them: bool, 64-bit integer, number
    or string."""
    for key, value in params.items():
        if key in HTTP_ONLY:
            raise InvalidInput(f"{where}: parameter {key!r} does not belong here")
        fits = isinstance(value, (bool, float, str)) or (
            isinstance(value, int) and -INT64_MAX - 1 <= value <= UINT64_MAX
        )
        if not fits:
            raise InvalidInput(
                f"{where}: parameter {key!r} must be a boolean, a 64-bit integer, a number or a"
                f" string, got {json.dumps(value)[:60]}"
            )
    return params


def parameters_json(params) -> dict:
    return {
        key: getattr(p, p.WhichOneof("parameter_choice"))
        for key, p in params.items()
        if p.WhichOneof("parameter_choice")
    }


def load_json(body: bytes, what: str) -> dict:
    """A JSON object body ({} when empty), or InvalidInput naming where it broke."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the {what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"the {what} nests too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidInput(f"the {what} holds a number JSON cannot carry here: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the {what} must be a JSON object")
    return doc


def _object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return dict(value)


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a JSON list")
    return value


def _field(obj: dict, key: str, kind: type, what: str):
    value = obj.get(key)
    if not isinstance(value, kind):
        raise InvalidInput(f"{what} needs {key!r} ({kind.__name__})")
    return value
