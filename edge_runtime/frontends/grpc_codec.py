"""Open Inference Protocol gRPC messages <-> the data plane's InferRequest and InferResult. Framing only: which
raw_input_contents entry belongs to which input, typed contents, parameters as plain values; every check against
the model is the data plane's (fedge.edge_runtime.serving.inference)."""

from __future__ import annotations

import numpy as np

from fedge.edge_runtime.common.datatypes import BYTES, CONTENTS_FIELD, NUMPY, datatype_of, serialize_bytes
from fedge.edge_runtime.common.errors import InvalidInput
from fedge.edge_runtime.distribution.bundle import TensorDesc
from fedge.edge_runtime.serving import inference
from fedge.edge_runtime.serving.inference import InferRequest, InferResult, InputTensor, RequestedOutput, shm_ref
from fedge.edge_runtime.serving.shared_memory import ShmClient
from fedge.proto import grpc_service_pb2 as pb


def parameters(params) -> dict:
    """An InferParameter map as plain values (None for a parameter without one)."""
    out = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, kind) if kind is not None else None
    return out


def infer_request(req: pb.ModelInferRequest) -> InferRequest:
    """Raw entries go, in order, to the inputs not in shared memory (tritonclient sends none for the others)."""
    inputs = []
    for t in req.inputs:
        params = parameters(t.parameters)
        has_typed = t.HasField("contents") and t.contents.ByteSize() > 0
        inputs.append(
            InputTensor(
                t.name,
                t.datatype,
                tuple(t.shape),
                values=_typed(t) if has_typed else None,
                shm=shm_ref(f"input {t.name!r}", params),
            )
        )
    n_raw = sum(i.shm is None for i in inputs)
    if req.raw_input_contents:
        if len(req.raw_input_contents) != n_raw:
            raise InvalidInput(
                f"raw_input_contents has {len(req.raw_input_contents)} entries for {n_raw} inputs"
                + (" not in shared memory" if n_raw != len(inputs) else "")
            )
        raw = iter(req.raw_input_contents)
        for i in inputs:
            if i.shm is None:
                i.raw = next(raw)
    outputs = [RequestedOutput(o.name, parameters(o.parameters)) for o in req.outputs]
    return InferRequest(req.model_name, req.model_version, req.id, inputs, outputs, parameters(req.parameters))


def _typed(t):
    """The typed contents' decoder: checked against the element count the shape gives, once that is checked."""

    def decode(count: int) -> np.ndarray:
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

    return decode


def decode_inputs(
    req: pb.ModelInferRequest, expected: tuple[TensorDesc, ...], max_batch: int, shm: ShmClient | None = None
) -> dict[str, np.ndarray]:
    """A ModelInferRequest's inputs as the model's numpy arrays (framing, then the data plane's checks)."""
    return inference.decode_inputs(infer_request(req).inputs, expected, max_batch, shm)


def infer_response(result: InferResult) -> pb.ModelInferResponse:
    """Raw outputs; one written into shared memory keeps an empty raw_output_contents entry (so that entry i is
    still output i, which is how tritonclient finds them) and says where it went in its parameters."""
    resp = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=result.id)
    for name, arr in result.outputs.items():
        dt = datatype_of(arr)
        out = resp.outputs.add(name=name, datatype=dt, shape=list(arr.shape))
        placed = result.in_shm.get(name)
        if placed is None:
            resp.raw_output_contents.append(
                serialize_bytes(arr) if dt == BYTES else np.ascontiguousarray(arr).tobytes()
            )
            continue
        ref, size = placed
        resp.raw_output_contents.append(b"")
        out.parameters["shared_memory_region"].string_param = ref.region
        out.parameters["shared_memory_byte_size"].int64_param = size
        if ref.offset:
            out.parameters["shared_memory_offset"].int64_param = ref.offset
    return resp
