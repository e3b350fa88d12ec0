"""Runs in its own process (tritonclient bundles protos of the same names as fedge's, so the two cannot share a
process): drives a fedge edge server with tritonclient.grpc exactly as a Triton user would."""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main(url: str, x_path: str) -> None:
    c = grpcclient.InferenceServerClient(url=url)
    report = {"live": c.is_server_live(), "ready": c.is_server_ready(),
              "digits_ready": c.is_model_ready("digits"), "intent_ready": c.is_model_ready("intent")}
    meta = c.get_model_metadata("digits", as_json=True)
    report["digits_inputs"] = meta["inputs"]
    report["platform"] = meta["platform"]
    x = np.load(x_path)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("logits")])
    report["logits"] = res.as_numpy("logits").tolist()
    text = np.array([[b"I lost my credit card yesterday"], [b"how much data have I used this month"]], dtype=object)
    tin = grpcclient.InferInput("text", list(text.shape), "BYTES")
    tin.set_data_from_numpy(text)
    res = c.infer("intent", [tin])
    report["intent_logits_shape"] = list(res.as_numpy("logits").shape)
    report["intent_labels"] = [v.decode() for v in res.as_numpy("label").reshape(-1)]
    report["index"] = [m["name"] for m in c.get_model_repository_index(as_json=True)["models"]]
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
