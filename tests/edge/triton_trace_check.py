"""Runs in its own process (tritonclient's protos clash with fedge's): Triton's trace extension driven with
tritonclient.grpc (get_trace_settings / update_trace_settings) against a fedge edge server started with
--trace-config triton,file=... level=TIMESTAMPS rate=2; prints what it saw as JSON."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def refused(call) -> list:
    try:
        call()
    except InferenceServerException as exc:
        return [str(exc.status()), exc.message()]
    return ["OK", ""]


def flat(settings: dict) -> dict:
    """{"trace_rate": {"value": ["2"]}} (the JSON form of the response) -> {"trace_rate": ["2"]}"""
    return {key: entry.get("value", []) for key, entry in settings["settings"].items()}


def main(url: str) -> None:
    c = grpcclient.InferenceServerClient(url=url)
    report = {
        "extensions": c.get_server_metadata(as_json=True)["extensions"],
        "global": flat(c.get_trace_settings(as_json=True)),
    }
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    image = grpcclient.InferInput("input", list(x.shape), "FP32")
    image.set_data_from_numpy(x)
    for i in range(10):
        c.infer("digits", [image], request_id=f"d{i}")
    report["intent_set"] = flat(
        c.update_trace_settings("intent", {"trace_rate": "1", "trace_count": "3"}, as_json=True)
    )
    text = np.array([[b"I lost my card"]], dtype=object)
    words = grpcclient.InferInput("text", list(text.shape), "BYTES")
    words.set_data_from_numpy(text)
    for i in range(5):
        c.infer("intent", [words], request_id=f"t{i}")
    report["intent_after"] = flat(c.get_trace_settings("intent", as_json=True))
    report["global_after"] = flat(c.get_trace_settings(as_json=True))
    report["set_file"] = refused(lambda: c.update_trace_settings(settings={"trace_file": "/tmp/elsewhere.json"}))
    report["tensors"] = refused(lambda: c.update_trace_settings(settings={"trace_level": ["TENSORS"]}))
    report["bad_rate"] = refused(lambda: c.update_trace_settings(settings={"trace_rate": "0", "trace_count": "5"}))
    report["unknown_model"] = refused(lambda: c.update_trace_settings("no_such_model", {"trace_rate": "1"}))
    report["global_unchanged"] = flat(c.get_trace_settings(as_json=True))
    report["intent_cleared"] = flat(c.update_trace_settings("intent", {"trace_rate": None}, as_json=True))
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
