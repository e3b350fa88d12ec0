"""A minimal Open Inference Protocol client over fedge's own stubs (``fedge edge predict``); any KServe v2
client (tritonclient.grpc) works the same way."""

from __future__ import annotations

import grpc
import numpy as np

from fedge.edge_runtime.common.datatypes import BYTES, NUMPY, datatype_of, deserialize_bytes, serialize_bytes
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc


class EdgeClient:
    def __init__(self, url: str, max_message_bytes: int = 64 << 20, tls: grpc.ChannelCredentials | None = None) -> None:
        """``tls``: credentials from ``common.tls.channel_credentials`` for a TLS server; None: plaintext."""
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self.channel = (
            grpc.secure_channel(url, tls, options=options)
            if tls is not None
            else grpc.insecure_channel(url, options=options)
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def metadata(self, model: str) -> pb.ModelMetadataResponse:
        return self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model))

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: str = "",
        timeout: float = 30,
        outputs: dict[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """``outputs``: output name -> top-k classes to return for it (Triton's classification extension; 0: the
        tensor itself); None: every output."""
        return decode_outputs(self.stub.ModelInfer(infer_request(model, inputs, version, outputs), timeout=timeout))

    def close(self) -> None:
        self.channel.close()


def infer_request(
    model: str, inputs: dict[str, np.ndarray], version: str = "", outputs: dict[str, int] | None = None
) -> pb.ModelInferRequest:
    """A ModelInferRequest with raw input contents (as tritonclient.grpc sends them); ``outputs`` as for
    :meth:`EdgeClient.infer`."""
    req = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, top in (outputs or {}).items():
        wanted = req.outputs.add(name=name)
        if top:
            wanted.parameters["classification"].int64_param = top
    for name, arr in inputs.items():
        req.inputs.add(name=name, datatype=datatype_of(arr), shape=list(arr.shape))
        req.raw_input_contents.append(raw_bytes(arr))
    return req


def raw_bytes(arr: np.ndarray) -> bytes:
    """A tensor's raw contents on the wire (length-prefixed elements for BYTES)."""
    return serialize_bytes(arr) if datatype_of(arr) == BYTES else np.ascontiguousarray(arr).tobytes()


def decode_outputs(resp: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    out = {}
    for t, raw in zip(resp.outputs, resp.raw_output_contents):
        n = int(np.prod(t.shape))
        arr = deserialize_bytes(raw, n) if t.datatype == BYTES else np.frombuffer(raw, dtype=NUMPY[t.datatype])
        out[t.name] = arr.reshape(tuple(t.shape))
    return out
