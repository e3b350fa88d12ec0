"""Runs in its own process (tritonclient's protos clash with fedge's): tritonclient.grpc against a TLS edge server,
once with each given set of credentials, reporting what worked and the error of what did not."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def attempt(url: str, x: np.ndarray, **tls) -> dict:
    try:
        c = grpcclient.InferenceServerClient(url=url, **tls)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("logits")], client_timeout=20)
        return {"live": c.is_server_live(), "logits": res.as_numpy("logits").tolist()}
    except InferenceServerException as exc:
        return {"error": str(exc.status()), "message": exc.message()}


def main(url: str, x_path: str, ca: str, cert: str, key: str, stranger_cert: str, stranger_key: str) -> None:
    x = np.load(x_path)
    print(
        json.dumps(
            {
                "mutual": attempt(url, x, ssl=True, root_certificates=ca, certificate_chain=cert, private_key=key),
                "no_client_cert": attempt(url, x, ssl=True, root_certificates=ca),
                "stranger": attempt(
                    url, x, ssl=True, root_certificates=ca, certificate_chain=stranger_cert, private_key=stranger_key
                ),
                "plaintext": attempt(url, x),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
