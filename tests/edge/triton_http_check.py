"""Runs in its own process, as the gRPC checks do: drives a fedge edge server's KServe v2 REST endpoint with
tritonclient.http exactly as a Triton user would (binary and JSON tensors, compression, concurrent async
requests, errors), printing what it saw as JSON."""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TEXT = np.array([[b"I lost my credit card yesterday"], [b"how much data have I used this month"]], dtype=object)


def image_input(x: np.ndarray, binary: bool) -> httpclient.InferInput:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def text_input(binary: bool) -> httpclient.InferInput:
    inp = httpclient.InferInput("text", list(TEXT.shape), "BYTES")
    inp.set_data_from_numpy(TEXT, binary_data=binary)
    return inp


def text(v) -> str:
    """BYTES elements come back as bytes from binary outputs, as str from JSON ones (as from Triton)."""
    return v.decode() if isinstance(v, bytes) else v


def error_of(call) -> dict:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {"status": None, "message": "no error"}


def main(url: str, x_path: str) -> None:
    x = np.load(x_path)
    c = httpclient.InferenceServerClient(url=url, concurrency=8)
    r = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "digits_ready": c.is_model_ready("digits"),
        "missing_ready": c.is_model_ready("no_such_model"),
        "server": c.get_server_metadata(),
        "metadata": c.get_model_metadata("digits"),
        "config": c.get_model_config("digits"),
        "index": c.get_model_repository_index(),
    }
    logits = httpclient.InferRequestedOutput
    r["binary"] = c.infer("digits", [image_input(x, True)]).as_numpy("logits").tolist()
    res = c.infer("digits", [image_input(x, False)], outputs=[logits("logits", binary_data=False)], request_id="j1")
    r["json"], r["json_response"] = res.as_numpy("logits").tolist(), res.get_response()
    r["top3"] = np.char.decode(
        c.infer("digits", [image_input(x, True)], outputs=[logits("logits", class_count=3)])
        .as_numpy("logits")
        .astype(bytes)
    ).tolist()
    r["compressed"] = (
        c.infer(
            "digits",
            [image_input(x, True)],
            request_compression_algorithm="gzip",
            response_compression_algorithm="deflate",
        )
        .as_numpy("logits")
        .tolist()
    )
    r["labels"] = {
        str(binary): [
            text(v)
            for v in c.infer("intent", [text_input(binary)], outputs=[logits("label", binary_data=binary)])
            .as_numpy("label")
            .reshape(-1)
        ]
        for binary in (True, False)
    }
    pending = [c.async_infer("digits", [image_input(x[i : i + 1], True)]) for i in range(len(x))]
    r["async"] = [p.get_result().as_numpy("logits")[0].tolist() for p in pending]
    r["stats"] = c.get_inference_statistics("digits")["model_stats"][0]
    r["trace"] = c.update_trace_settings("digits", {"trace_rate": "7"})
    r["trace_cleared"] = c.update_trace_settings("digits", {"trace_rate": None})
    r["log"] = c.update_log_settings({"log_verbose_level": 1})
    c.update_log_settings({"log_verbose_level": 0})
    c.load_model("digits", config=json.dumps({"max_batch_size": 8}))
    r["reloaded_max_batch"] = c.get_model_config("digits")["max_batch_size"]
    c.load_model("digits")
    r["restored_max_batch"] = c.get_model_config("digits")["max_batch_size"]
    bad = httpclient.InferInput("input", [1, 1, 8, 8], "FP64")
    bad.set_data_from_numpy(np.zeros((1, 1, 8, 8)), binary_data=True)
    r["errors"] = {
        "datatype": error_of(lambda: c.infer("digits", [bad])),
        "unknown_model": error_of(lambda: c.infer("no_such_model", [image_input(x, True)])),
        "unknown_version": error_of(lambda: c.get_model_metadata("digits", "99")),
        "over_max_batch": error_of(lambda: c.infer("digits", [image_input(np.zeros((65, 1, 8, 8), np.float32), True)])),
        "file_upload": error_of(lambda: c.load_model("digits", config="{}", files={"file:1/model.onnx": b"x"})),
        "shared_memory": error_of(lambda: c.register_system_shared_memory("r", "/fedge_nope", 64)),
    }
    r["ready_after"] = c.is_server_ready() and c.is_model_ready("digits")
    c.close()
    print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
