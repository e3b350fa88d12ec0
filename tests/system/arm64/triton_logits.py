"""tritonclient against a server, in its own process (tritonclient's protos clash with fedge's in one process):
``python -m tests.system.arm64.triton_logits GRPC_URL HTTP_URL X.npy OUT.npz MODEL...`` writes each model's logits
for X (gRPC, batches of 64) to OUT.npz and prints the first model's metadata (HTTP) as JSON."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def logits(client, model: str, x: np.ndarray, batch: int = 64) -> np.ndarray:
    got = []
    for i in range(0, len(x), batch):
        inp = grpcclient.InferInput("input", list(x[i : i + batch].shape), "FP32")
        inp.set_data_from_numpy(x[i : i + batch])
        got.append(client.infer(model, [inp], client_timeout=120).as_numpy("logits"))
    return np.concatenate(got)


def main(grpc_url: str, http_url: str, x_path: str, out: str, *models: str) -> None:
    x = np.load(x_path)
    client = grpcclient.InferenceServerClient(grpc_url)
    np.savez(out, **{m: logits(client, m, x) for m in models})
    print(json.dumps(httpclient.InferenceServerClient(http_url).get_model_metadata(models[0])))


if __name__ == "__main__":
    main(*sys.argv[1:])
