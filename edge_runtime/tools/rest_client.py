"""``fedge edge predict`` over the KServe v2 REST endpoint (``http://`` and ``https://`` URLs), with the standard
library only; the same calls as tools.grpc_client's EdgeClient. Tensors travel as tritonclient.http sends
them: a JSON header, then the binary data (``Inference-Header-Content-Length``)."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote

import numpy as np
from google.protobuf import json_format

from fedge.edge_runtime.common.datatypes import BYTES, NUMPY, datatype_of, deserialize_bytes
from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.edge_runtime.tools.grpc_client import raw_bytes
from fedge.proto import grpc_service_pb2 as pb


class RestError(FedgeUserError):
    """The server's answer to a failed call: HTTP status and its error message."""

    def __init__(self, status: int, message: str) -> None:
        """``status`` 0: no answer at all (refused, TLS handshake failed, connection dropped)."""
        super().__init__(f"HTTP {status}: {message}" if status else f"UNAVAILABLE: {message}")
        self.status, self.message = status, message


class RestClient:
    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """``url``: http://HOST:PORT or https://HOST:PORT; ``ssl_context`` verifies an https server (None: the
        system's roots) and may carry this client's certificate."""
        self.base = url.rstrip("/")
        self.ssl = ssl_context

    def metadata(self, model: str) -> pb.ModelMetadataResponse:
        _, body = self._call("GET", model_path(model))
        return json_format.ParseDict(json.loads(body), pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: str = "",
        timeout: float = 30,
        outputs: dict[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """``outputs``: output name -> top-k classes (0: the tensor itself); None: every output."""
        body, headers = infer_body(inputs, outputs)
        headers, body = self._call("POST", model_path(model, version) + "/infer", body, headers, timeout)
        return decode_outputs(body, headers.get("Inference-Header-Content-Length"))

    def close(self) -> None:
        pass  # one connection per call

    def _call(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
    ) -> tuple[dict, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as resp:
                return dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            raise RestError(exc.code, error_message(exc.read()) or exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, TLS refusals, a dropped connection
            reason = getattr(exc, "reason", None) or exc
            raise RestError(0, f"no answer from {self.base}: {reason or type(exc).__name__}") from None


def model_path(model: str, version: str = "") -> str:
    return f"/v2/models/{quote(model)}" + (f"/versions/{quote(version)}" if version else "")


def infer_body(inputs: dict[str, np.ndarray], outputs: dict[str, int] | None = None) -> tuple[bytes, dict]:
    """An inference request's body and headers as tritonclient.http sends them: the JSON header, then the binary
    tensors; ``outputs`` as for :meth:`RestClient.infer`."""
    raws = [raw_bytes(arr) for arr in inputs.values()]
    doc: dict = {
        "inputs": [
            {
                "name": name,
                "datatype": datatype_of(arr),
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
            for (name, arr), raw in zip(inputs.items(), raws)
        ]
    }
    if outputs:
        doc["outputs"] = [
            {"name": name, "parameters": {"binary_data": True, **({"classification": k} if k else {})}}
            for name, k in outputs.items()
        ]
    else:
        doc["parameters"] = {"binary_data_output": True}
    head = json.dumps(doc).encode()
    return head + b"".join(raws), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def error_message(body: bytes) -> str:
    """The message of a KServe v2 REST error body (``{"error": "..."}``), else the body as text."""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text


def decode_outputs(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """A KServe v2 REST inference response -> output name -> array (binary outputs, or JSON ``data``)."""
    size = int(header_length) if header_length is not None else len(body)
    doc, offset, out = json.loads(body[:size]), size, {}
    for o in doc["outputs"]:
        shape = tuple(o["shape"])
        n = int(np.prod(shape))
        length = (o.get("parameters") or {}).get("binary_data_size")
        if length is not None:
            raw = body[offset : offset + length]
            offset += length
            arr = deserialize_bytes(raw, n) if o["datatype"] == BYTES else np.frombuffer(raw, NUMPY[o["datatype"]])
        else:
            arr = np.array(o["data"], dtype=object if o["datatype"] == BYTES else NUMPY[o["datatype"]])
        out[o["name"]] = arr.reshape(shape)
    return out
