"""Open Inference Protocol messages <-> numpy, with every check a malformed request needs: input names and
count, datatype, shape (rank, negative or mismatched dims, batch limits), byte sizes, BYTES length prefixes,
raw vs typed contents. Any violation is InvalidInput saying what was expected."""
from __future__ import annotations

import math

import numpy as np

from proto import grpc_service_pb2 as pb

from .bundle import TensorDesc
from .datatypes import BYTES, CONTENTS_FIELD, DATATYPES, NUMPY, datatype_of, deserialize_bytes, serialize_bytes
from .errors import InvalidInput

MAX_ELEMENTS = 1 << 31


def _check_shape(t, desc: TensorDesc, max_batch: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in t.shape)
    if len(shape) != len(desc.shape):
        raise InvalidInput(f"input {t.name!r}: shape {list(shape)} has rank {len(shape)}, expected {list(desc.shape)}")
    if any(s < 0 for s in shape):
        raise InvalidInput(f"input {t.name!r}: negative dimension in shape {list(shape)}")
    for got, want in zip(shape[1:], desc.shape[1:]):
        if want >= 0 and got != want:
            raise InvalidInput(f"input {t.name!r}: shape {list(shape)}, expected {list(desc.shape)}")
    if shape[0] < 1:
        raise InvalidInput(f"input {t.name!r}: batch dimension must be >= 1, got {shape[0]}")
    if shape[0] > max_batch:
        raise InvalidInput(f"input {t.name!r}: batch size {shape[0]} exceeds the model's max_batch_size {max_batch}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInput(f"input {t.name!r}: shape {list(shape)} is too large")
    return shape


def decode_inputs(req: pb.ModelInferRequest, expected: tuple[TensorDesc, ...], max_batch: int) -> dict[str, np.ndarray]:
    want = {d.name: d for d in expected}
    names = [t.name for t in req.inputs]
    if sorted(names) != sorted(want) or len(set(names)) != len(names):
        raise InvalidInput(f"expected inputs {sorted(want)}, got {names}")
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs")
    out, batch = {}, None
    for i, t in enumerate(req.inputs):
        desc = want[t.name]
        if t.datatype not in DATATYPES:
            raise InvalidInput(f"input {t.name!r}: unknown datatype {t.datatype!r}")
        if t.datatype != desc.datatype:
            raise InvalidInput(f"input {t.name!r}: datatype {t.datatype}, expected {desc.datatype}")
        shape = _check_shape(t, desc, max_batch)
        if batch is not None and shape[0] != batch:
            raise InvalidInput(f"inputs disagree on batch size ({batch} vs {shape[0]})")
        batch = shape[0]
        count = math.prod(shape)
        has_typed = t.HasField("contents") and t.contents.ByteSize() > 0
        if raw:
            if has_typed:
                raise InvalidInput(f"input {t.name!r}: both raw_input_contents and typed contents are set")
            arr = _from_raw(t.name, t.datatype, raw[i], count)
        elif has_typed:
            arr = _from_typed(t, count)
        else:
            raise InvalidInput(f"input {t.name!r} carries no data (neither raw_input_contents nor contents)")
        out[t.name] = arr.reshape(shape)
    return out


def _from_raw(name: str, datatype: str, buf: bytes, count: int) -> np.ndarray:
    if datatype == BYTES:
        return deserialize_bytes(buf, count)
    dtype = NUMPY[datatype]
    if len(buf) != count * dtype.itemsize:
        raise InvalidInput(f"input {name!r}: {len(buf)} bytes of raw data, expected {count * dtype.itemsize}"
                           f" ({count} x {datatype})")
    return np.frombuffer(buf, dtype=dtype)


def _from_typed(t, count: int) -> np.ndarray:
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise InvalidInput(f"input {t.name!r}: datatype {t.datatype} must be sent as raw_input_contents")
    values = getattr(t.contents, field)
    if len(values) != count:
        raise InvalidInput(f"input {t.name!r}: {len(values)} values in contents.{field}, expected {count}")
    others = [f.name for f, _ in t.contents.ListFields() if f.name != field]
    if others:
        raise InvalidInput(f"input {t.name!r}: datatype {t.datatype} belongs in contents.{field}, not {others}")
    if t.datatype == BYTES:
        return np.array(list(values), dtype=object)
    try:
        return np.array(values, dtype=NUMPY[t.datatype])
    except OverflowError:
        raise InvalidInput(f"input {t.name!r}: a value does not fit {t.datatype}") from None


def encode_response(model_name: str, version: str, outputs: dict[str, np.ndarray], req_id: str) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=model_name, model_version=version, id=req_id)
    for name, arr in outputs.items():
        dt = datatype_of(arr)
        resp.outputs.add(name=name, datatype=dt, shape=list(arr.shape))
        resp.raw_output_contents.append(serialize_bytes(arr) if dt == BYTES else np.ascontiguousarray(arr).tobytes())
    return resp


def requested_outputs(req: pb.ModelInferRequest, available: tuple[TensorDesc, ...]) -> dict[str, int]:
    """Output name -> the top-k count asked by Triton's classification extension (``classification`` parameter;
    0: the tensor itself), for the outputs asked (all when none is)."""
    by_name = {d.name: d for d in available}
    unknown = [o.name for o in req.outputs if o.name not in by_name]
    if unknown:
        raise InvalidInput(f"unknown requested output(s) {unknown}; the model has {list(by_name)}")
    wanted = {}
    for o in req.outputs:
        param = o.parameters.get("classification")
        k = 0 if param is None else param.int64_param
        if param is not None and (param.WhichOneof("parameter_choice") != "int64_param" or k < 1):
            raise InvalidInput(f"output {o.name!r}: classification must be an int64 >= 1")
        if k and (by_name[o.name].datatype == BYTES or len(by_name[o.name].shape) != 2):
            raise InvalidInput(f"output {o.name!r}: classification needs a [batch, classes] numeric output")
        wanted[o.name] = k
    return wanted or {d.name: 0 for d in available}


def classify(scores: np.ndarray, k: int, labels: tuple[str, ...]) -> np.ndarray:
    """Triton's classification output: per row, the top ``k`` classes as "score:index" or "score:index:label"
    (BYTES, [batch, min(k, classes)])."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    named = len(labels) == scores.shape[1]
    rows = [[(f"{row[i]:f}:{i}" + (f":{labels[i]}" if named else "")).encode() for i in idx]
            for row, idx in zip(scores, top)]
    return np.array(rows, dtype=object).reshape(len(scores), k)
