"""Runs in its own process (tritonclient bundles protos of the same names as fedge's, so the two cannot share a
process): drives a fedge edge server with tritonclient.grpc exactly as a Triton user would."""

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main(url: str, x_path: str) -> None:
    c = grpcclient.InferenceServerClient(url=url)
    report = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "digits_ready": c.is_model_ready("digits"),
        "intent_ready": c.is_model_ready("intent"),
    }
    meta = c.get_model_metadata("digits", as_json=True)
    report["digits_inputs"] = meta["inputs"]
    report["platform"] = meta["platform"]
    x = np.load(x_path)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("logits")])
    report["logits"] = res.as_numpy("logits").tolist()
    top = c.infer("digits", [inp], outputs=[grpcclient.InferRequestedOutput("logits", class_count=3)])
    report["top3"] = np.char.decode(top.as_numpy("logits").astype(bytes)).tolist()
    text = np.array([[b"I lost my credit card yesterday"], [b"how much data have I used this month"]], dtype=object)
    tin = grpcclient.InferInput("text", list(text.shape), "BYTES")
    tin.set_data_from_numpy(text)
    res = c.infer("intent", [tin])
    report["intent_logits_shape"] = list(res.as_numpy("logits").shape)
    report["intent_labels"] = [v.decode() for v in res.as_numpy("label").reshape(-1)]
    report["index"] = [m["name"] for m in c.get_model_repository_index(as_json=True)["models"]]
    report["config"] = {name: c.get_model_config(name, as_json=True)["config"] for name in ("digits", "intent")}
    before = c.get_inference_statistics("digits", as_json=True)["model_stats"]
    report["stream"] = stream(c, inp, tin)
    report["stats"] = {"before": before, "after": c.get_inference_statistics(as_json=True)["model_stats"]}
    c.load_model("digits", config=json.dumps({"max_batch_size": 8, "instance_group": [{"count": 2}]}))
    report["reloaded_config"] = c.get_model_config("digits", as_json=True)["config"]
    c.load_model("digits", config=json.dumps({"dynamic_batching": {"priority_levels": 2, "default_priority_level": 2}}))
    report["priority_config"] = c.get_model_config("digits", as_json=True)["config"]["dynamic_batching"]
    report["priority_logits"] = c.infer("digits", [inp], priority=1).as_numpy("logits").tolist()
    c.load_model("digits")  # back to the server's flags
    report["restored_config"] = c.get_model_config("digits", as_json=True)["config"]
    report["log_settings"] = c.update_log_settings({"log_verbose_level": 1}, as_json=True)["settings"]
    c.update_log_settings({"log_verbose_level": 0})
    report["extensions"] = c.get_server_metadata(as_json=True)["extensions"]
    print(json.dumps(report))


def stream(c, inp, tin) -> list:
    """Five image requests, one text request and two bad ones on one bidirectional stream."""
    answers = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(5):
        c.async_stream_infer("digits", [inp], request_id=f"d{i}")
    c.async_stream_infer("no_such_model", [inp], request_id="missing")
    bad = grpcclient.InferInput("input", [1, 1, 8, 8], "FP64")
    bad.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.float64))
    c.async_stream_infer("digits", [bad], request_id="fp64")
    c.async_stream_infer("intent", [tin], request_id="text")
    out = []
    for _ in range(8):
        result, error = answers.get(timeout=60)
        if error is not None:
            out.append({"error": str(error)})
        else:
            r = result.get_response()
            out.append(
                {
                    "id": r.id,
                    "version": r.model_version,
                    "output": (
                        result.as_numpy("logits")
                        if r.model_name == "digits"
                        else np.char.decode(result.as_numpy("label").astype(bytes))
                    ).tolist(),
                }
            )
    c.stop_stream()
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
