"""Runs in its own process (tritonclient's protos clash with fedge's): Triton's system shared memory, driven the
way Triton's own example (simple_grpc_shm_client.py) drives it, against a fedge edge server."""

import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor, serialized_byte_size

OUT_OFFSET = 64  # the logits go this far into the output region, behind bytes that must stay untouched


def main(url: str, x_path: str) -> None:
    c = grpcclient.InferenceServerClient(url=url)
    c.unregister_system_shared_memory()  # Triton's example starts from a clean slate, CUDA regions included
    c.unregister_cuda_shared_memory()
    report = {
        "extensions": c.get_server_metadata(as_json=True)["extensions"],
        "cuda_status": c.get_cuda_shared_memory_status(as_json=True),
    }
    x = np.load(x_path)
    tag = f"fedge_test_{os.getpid()}"
    in_h = shm.create_shared_memory_region("digits_in", f"/{tag}_in", x.nbytes)
    out_h = shm.create_shared_memory_region("digits_out", f"/{tag}_out", 1024)
    text = np.array([[b"I lost my credit card yesterday"], [b"how much data have I used this month"]], dtype=object)
    text_bytes = serialize_byte_tensor(text)
    text_size = serialized_byte_size(text_bytes)
    text_h = shm.create_shared_memory_region("text_in", f"/{tag}_text", text_size)
    try:
        shm.set_shared_memory_region(in_h, [x])
        shm.set_shared_memory_region(out_h, [np.full(1024, 0xAB, dtype=np.uint8)])
        shm.set_shared_memory_region(text_h, [text_bytes])
        c.register_system_shared_memory("digits_in", f"/{tag}_in", x.nbytes)
        c.register_system_shared_memory("digits_out", f"/{tag}_out", 1024)
        c.register_system_shared_memory("text_in", f"/{tag}_text", text_size)
        report["status"] = c.get_system_shared_memory_status(as_json=True)

        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_shared_memory("digits_in", x.nbytes)
        logits = grpcclient.InferRequestedOutput("logits")
        logits.set_shared_memory("digits_out", x.shape[0] * 10 * 4, offset=OUT_OFFSET)
        # logits into shared memory, the label over the wire: as_numpy must still find the label
        res = c.infer("digits", [inp], outputs=[logits, grpcclient.InferRequestedOutput("label")])
        report["logits"] = shm.get_contents_as_numpy(out_h, np.float32, [x.shape[0], 10], offset=OUT_OFFSET).tolist()
        params = res.get_output("logits").parameters  # (tritonclient's get_output(as_json=True) returns None)
        report["logits_output"] = {
            "region": params["shared_memory_region"].string_param,
            "byte_size": params["shared_memory_byte_size"].int64_param,
            "offset": params["shared_memory_offset"].int64_param,
            "raw": len(res.get_response().raw_output_contents[0]),
        }
        report["labels"] = [v.decode() for v in res.as_numpy("label").reshape(-1)]
        raw = shm.get_contents_as_numpy(out_h, np.uint8, [1024])
        report["untouched"] = bool(
            (raw[:OUT_OFFSET] == 0xAB).all() and (raw[OUT_OFFSET + x.shape[0] * 40 :] == 0xAB).all()
        )

        # a text model: the BYTES input from shared memory, its BYTES label output written back to it
        tin = grpcclient.InferInput("text", list(text.shape), "BYTES")
        tin.set_shared_memory("text_in", text_size)
        label = grpcclient.InferRequestedOutput("label")
        label.set_shared_memory("digits_out", 512)
        res = c.infer("intent", [tin], outputs=[label])
        size = res.get_output("label").parameters["shared_memory_byte_size"].int64_param
        report["intent_labels"] = [v.decode() for v in shm.get_contents_as_numpy(out_h, np.object_, [2, 1]).reshape(-1)]
        report["intent_label_bytes"] = size

        report["errors"] = {}

        def expect_error(key, fn):
            try:
                fn()
                report["errors"][key] = None
            except InferenceServerException as exc:
                report["errors"][key] = [exc.status(), exc.message()]

        expect_error("cuda_register", lambda: c.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 16))
        expect_error("twice", lambda: c.register_system_shared_memory("digits_in", f"/{tag}_in", x.nbytes))
        small = grpcclient.InferRequestedOutput("logits")
        small.set_shared_memory("digits_out", 16)
        expect_error("output_too_small", lambda: c.infer("digits", [inp], outputs=[small]))

        c.unregister_system_shared_memory("digits_in")
        report["status_after_one"] = sorted(c.get_system_shared_memory_status(as_json=True).get("regions", {}))
        expect_error("unregistered", lambda: c.infer("digits", [inp]))
        c.unregister_system_shared_memory()
        report["status_after_all"] = c.get_system_shared_memory_status(as_json=True)
    finally:
        for h in (in_h, out_h, text_h):
            shm.destroy_shared_memory_region(h)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
