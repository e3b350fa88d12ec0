"""Open Inference Protocol messages <-> numpy, with every check a malformed request needs: input names and
count, datatype, shape (rank, negative or mismatched dims, batch limits), byte sizes, BYTES length prefixes,
raw vs typed contents vs shared memory. Any violation is InvalidInput saying what was expected."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from proto import grpc_service_pb2 as pb

from .bundle import TensorDesc
from .datatypes import BYTES, CONTENTS_FIELD, DATATYPES, NUMPY, datatype_of, deserialize_bytes, serialize_bytes
from .errors import InvalidInput
from .shared_memory import ShmClient, ShmRef

MAX_ELEMENTS = 1 << 31
SHM_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


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


def decode_inputs(req: pb.ModelInferRequest, expected: tuple[TensorDesc, ...], max_batch: int,
                  shm: ShmClient | None = None) -> dict[str, np.ndarray]:
    want = {d.name: d for d in expected}
    names = [t.name for t in req.inputs]
    if sorted(names) != sorted(want) or len(set(names)) != len(names):
        raise InvalidInput(f"expected inputs {sorted(want)}, got {names}")
    refs = [shm_ref(f"input {t.name!r}", t.parameters) for t in req.inputs]
    raw = iter(req.raw_input_contents)
    n_raw = sum(ref is None for ref in refs)  # an input in shared memory has no raw_input_contents entry
    if req.raw_input_contents and len(req.raw_input_contents) != n_raw:
        raise InvalidInput(f"raw_input_contents has {len(req.raw_input_contents)} entries for {n_raw} inputs"
                           + (" not in shared memory" if n_raw != len(refs) else ""))
    out, batch = {}, None
    for t, ref in zip(req.inputs, refs):
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
        if ref is not None:
            if has_typed:
                raise InvalidInput(f"input {t.name!r}: both shared memory parameters and typed contents are set")
            if shm is None:
                raise InvalidInput(f"input {t.name!r}: shared memory is not available here")
            arr = _from_raw(t.name, t.datatype, shm.read(ref, f"input {t.name!r}"), count)
        elif req.raw_input_contents:
            if has_typed:
                raise InvalidInput(f"input {t.name!r}: both raw_input_contents and typed contents are set")
            arr = _from_raw(t.name, t.datatype, next(raw), count)
        elif has_typed:
            arr = _from_typed(t, count)
        else:
            raise InvalidInput(f"input {t.name!r} carries no data (neither raw_input_contents nor contents)")
        out[t.name] = arr.reshape(shape)
    return out


def request_timeout_us(req: pb.ModelInferRequest) -> int:
    """The request's ``timeout`` parameter (tritonclient's ``infer(..., timeout=us)``), 0 when it has none."""
    param = req.parameters.get("timeout")
    return 0 if param is None else _int_param("the request", "timeout (microseconds)", param)


def request_priority(req: pb.ModelInferRequest) -> int:
    """The request's ``priority`` parameter (tritonclient's ``infer(..., priority=N)``: 1 the highest), 0 when it
    has none."""
    param = req.parameters.get("priority")
    return 0 if param is None else _int_param("the request", "priority", param)


def shm_ref(tensor: str, params) -> ShmRef | None:
    """Triton's shared-memory parameters of an input or requested output, or None when it has none."""
    region, size, offset = (params.get(k) for k in SHM_PARAMS)
    if region is None and size is None:
        if offset is not None:
            raise InvalidInput(f"{tensor}: shared_memory_offset is set without shared_memory_region")
        return None
    if region is None or size is None:
        raise InvalidInput(f"{tensor}: shared memory needs both shared_memory_region and shared_memory_byte_size")
    if region.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput(f"{tensor}: shared_memory_region must be a string")
    return ShmRef(region.string_param, _int_param(tensor, "shared_memory_offset", offset) if offset is not None else 0,
                  _int_param(tensor, "shared_memory_byte_size", size))


def _int_param(tensor: str, name: str, param) -> int:
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param") or getattr(param, kind) < 0:
        raise InvalidInput(f"{tensor}: {name} must be an integer >= 0")
    return getattr(param, kind)


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


def encode_response(model_name: str, version: str, outputs: dict[str, np.ndarray], req_id: str,
                    to_shm: dict[str, ShmRef] | None = None, shm: ShmClient | None = None) -> pb.ModelInferResponse:
    """Raw outputs; those in ``to_shm`` are written into their shared memory region instead, keep an empty
    raw_output_contents entry (so that entry i is still output i, which is how tritonclient finds them) and say
    where they went in their parameters."""
    resp = pb.ModelInferResponse(model_name=model_name, model_version=version, id=req_id)
    for name, arr in outputs.items():
        dt = datatype_of(arr)
        out = resp.outputs.add(name=name, datatype=dt, shape=list(arr.shape))
        data = serialize_bytes(arr) if dt == BYTES else np.ascontiguousarray(arr).tobytes()
        ref = to_shm.get(name) if to_shm else None
        if ref is None:
            resp.raw_output_contents.append(data)
            continue
        shm.write(ref, data, f"output {name!r}")
        resp.raw_output_contents.append(b"")
        out.parameters["shared_memory_region"].string_param = ref.region
        out.parameters["shared_memory_byte_size"].int64_param = len(data)
        if ref.offset:
            out.parameters["shared_memory_offset"].int64_param = ref.offset
    return resp


class Wanted(NamedTuple):
    class_count: int        # Triton's classification extension: the top k classes; 0: the tensor itself
    shm: ShmRef | None      # where the client wants it written, if in shared memory


def requested_outputs(req: pb.ModelInferRequest, available: tuple[TensorDesc, ...]) -> dict[str, Wanted]:
    """The outputs asked for (all when none is), each with its classification count and shared memory place."""
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
        wanted[o.name] = Wanted(k, shm_ref(f"output {o.name!r}", o.parameters))
    return wanted or {d.name: Wanted(0, None) for d in available}


def classify(scores: np.ndarray, k: int, labels: tuple[str, ...]) -> np.ndarray:
    """Triton's classification output: per row, the top ``k`` classes as "score:index" or "score:index:label"
    (BYTES, [batch, min(k, classes)])."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    named = len(labels) == scores.shape[1]
    rows = [[(f"{row[i]:f}:{i}" + (f":{labels[i]}" if named else "")).encode() for i in idx]
            for row, idx in zip(scores, top)]
    return np.array(rows, dtype=object).reshape(len(scores), k)
