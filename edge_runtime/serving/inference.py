"""An inference request and its answer as the data plane sees them, whichever protocol brought them, and every check
a request needs against the model it asks for: input names and count, datatype, shape (rank, negative or
mismatched dims, batch limits), byte sizes, BYTES length prefixes, raw vs typed contents vs shared memory,
requested outputs and their parameters. Any violation is InvalidInput saying what was expected.

The front ends only translate framing: gRPC's ModelInferRequest and the REST JSON + binary body both become an
:class:`InferRequest` whose tensors carry their data as the protocol sent it (raw little-endian bytes, typed values,
or a shared-memory place); :func:`decode_inputs` turns them into the numpy arrays the model runs on."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from fedge.edge_runtime.common.datatypes import BYTES, DATATYPES, NUMPY, deserialize_bytes
from fedge.edge_runtime.common.errors import InvalidInput, quoted
from fedge.edge_runtime.distribution.bundle import TensorDesc
from fedge.edge_runtime.serving.shared_memory import ShmClient, ShmRef

MAX_ELEMENTS = 1 << 31
SHM_PARAMS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None  # raw little-endian data (BYTES: length-prefixed)
    values: Callable[[int], np.ndarray] | None = None  # typed values, decoded given the element count
    shm: ShmRef | None = None  # in the client's shared memory


@dataclass
class RequestedOutput:
    name: str
    parameters: dict = field(default_factory=dict)  # classification, shared memory


@dataclass
class InferRequest:
    model: str
    version: str
    id: str
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] = field(default_factory=list)  # none: every output
    parameters: dict = field(default_factory=dict)  # timeout, priority (others are ignored)


@dataclass
class InferResult:
    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]
    in_shm: dict[str, tuple[ShmRef, int]] = field(default_factory=dict)  # written to the client's region: bytes


class Wanted(NamedTuple):
    class_count: int  # Triton's classification extension: the top k classes; 0: the tensor itself
    shm: ShmRef | None  # where the client wants it written, if in shared memory


def _check_shape(t: InputTensor, desc: TensorDesc, max_batch: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in t.shape)
    if len(shape) != len(desc.shape):
        raise InvalidInput(
            f"input {quoted(t.name)}: shape {list(shape)} has rank {len(shape)}, expected {list(desc.shape)}"
        )
    if any(s < 0 for s in shape):
        raise InvalidInput(f"input {quoted(t.name)}: negative dimension in shape {list(shape)}")
    for got, want in zip(shape[1:], desc.shape[1:]):
        if want >= 0 and got != want:
            raise InvalidInput(f"input {quoted(t.name)}: shape {list(shape)}, expected {list(desc.shape)}")
    if shape[0] < 1:
        raise InvalidInput(f"input {quoted(t.name)}: batch dimension must be >= 1, got {shape[0]}")
    if shape[0] > max_batch:
        raise InvalidInput(
            f"input {quoted(t.name)}: batch size {shape[0]} exceeds the model's max_batch_size {max_batch}"
        )
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInput(f"input {quoted(t.name)}: shape {list(shape)} is too large")
    return shape


def decode_inputs(
    inputs: list[InputTensor], expected: tuple[TensorDesc, ...], max_batch: int, shm: ShmClient | None = None
) -> dict[str, np.ndarray]:
    """The request's inputs as numpy arrays of the model's shapes, or InvalidInput naming the first problem."""
    want = {d.name: d for d in expected}
    names = [t.name for t in inputs]
    if sorted(names) != sorted(want) or len(set(names)) != len(names):
        raise InvalidInput(f"expected inputs {sorted(want)}, got {quoted(names)}")
    out, batch = {}, None
    for t in inputs:
        desc = want[t.name]
        if t.datatype not in DATATYPES:
            raise InvalidInput(f"input {quoted(t.name)}: unknown datatype {quoted(t.datatype)}")
        if t.datatype != desc.datatype:
            raise InvalidInput(f"input {quoted(t.name)}: datatype {t.datatype}, expected {desc.datatype}")
        shape = _check_shape(t, desc, max_batch)
        if batch is not None and shape[0] != batch:
            raise InvalidInput(f"inputs disagree on batch size ({batch} vs {shape[0]})")
        batch = shape[0]
        out[t.name] = _data(t, math.prod(shape), shm).reshape(shape)
    return out


def _data(t: InputTensor, count: int, shm: ShmClient | None) -> np.ndarray:
    if t.shm is not None:
        if t.values is not None:
            raise InvalidInput(f"input {quoted(t.name)}: both shared memory parameters and typed contents are set")
        if shm is None:
            raise InvalidInput(f"input {quoted(t.name)}: shared memory is not available here")
        return from_raw(t.name, t.datatype, shm.read(t.shm, f"input {quoted(t.name)}"), count)
    if t.raw is not None:
        if t.values is not None:
            raise InvalidInput(f"input {quoted(t.name)}: both raw_input_contents and typed contents are set")
        return from_raw(t.name, t.datatype, t.raw, count)
    if t.values is not None:
        return t.values(count)
    raise InvalidInput(f"input {quoted(t.name)} carries no data (neither raw_input_contents nor contents)")


def from_raw(name: str, datatype: str, buf: bytes, count: int) -> np.ndarray:
    if datatype == BYTES:
        return deserialize_bytes(buf, count)
    dtype = NUMPY[datatype]
    if len(buf) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {quoted(name)}: {len(buf)} bytes of raw data, expected {count * dtype.itemsize}"
            f" ({count} x {datatype})"
        )
    return np.frombuffer(buf, dtype=dtype)


def int_param(where: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{where}: {name} must be an integer >= 0")
    return value


def request_timeout_us(params: dict) -> int:
    """The request's ``timeout`` parameter (tritonclient's ``infer(..., timeout=us)``), 0 when it has none."""
    return int_param("the request", "timeout (microseconds)", params["timeout"]) if "timeout" in params else 0


def request_priority(params: dict) -> int:
    """The request's ``priority`` parameter (tritonclient's ``infer(..., priority=N)``: 1 the highest), 0 when it
    has none."""
    return int_param("the request", "priority", params["priority"]) if "priority" in params else 0


def shm_ref(tensor: str, params: dict) -> ShmRef | None:
    """Triton's shared-memory parameters of an input or requested output, or None when it has none."""
    region, size, offset = (params.get(k) for k in SHM_PARAMS)
    if region is None and size is None:
        if offset is not None:
            raise InvalidInput(f"{tensor}: shared_memory_offset is set without shared_memory_region")
        return None
    if region is None or size is None:
        raise InvalidInput(f"{tensor}: shared memory needs both shared_memory_region and shared_memory_byte_size")
    if not isinstance(region, str):
        raise InvalidInput(f"{tensor}: shared_memory_region must be a string")
    return ShmRef(
        region,
        int_param(tensor, "shared_memory_offset", offset) if offset is not None else 0,
        int_param(tensor, "shared_memory_byte_size", size),
    )


def requested_outputs(outputs: list[RequestedOutput], available: tuple[TensorDesc, ...]) -> dict[str, Wanted]:
    """The outputs asked for (all when none is), each with its classification count and shared memory place."""
    by_name = {d.name: d for d in available}
    unknown = [o.name for o in outputs if o.name not in by_name]
    if unknown:
        raise InvalidInput(f"unknown requested output(s) {quoted(unknown)}; the model has {list(by_name)}")
    wanted = {}
    for o in outputs:
        k = o.parameters.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise InvalidInput(f"output {quoted(o.name)}: classification must be an int64 >= 1")
        if k and (by_name[o.name].datatype == BYTES or len(by_name[o.name].shape) != 2):
            raise InvalidInput(f"output {quoted(o.name)}: classification needs a [batch, classes] numeric output")
        wanted[o.name] = Wanted(k or 0, shm_ref(f"output {quoted(o.name)}", o.parameters))
    return wanted or {d.name: Wanted(0, None) for d in available}


def classify(scores: np.ndarray, k: int, labels: tuple[str, ...]) -> np.ndarray:
    """Triton's classification output: per row, the top ``k`` classes as "score:index" or "score:index:label"
    (BYTES, [batch, min(k, classes)])."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    named = len(labels) == scores.shape[1]
    rows = [
        [(f"{row[i]:f}:{i}" + (f":{labels[i]}" if named else "")).encode() for i in idx]
        for row, idx in zip(scores, top)
    ]
    return np.array(rows, dtype=object).reshape(len(scores), k)
