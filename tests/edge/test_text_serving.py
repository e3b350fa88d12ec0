"""A text release on the device: the bundle ships the base's tokenizer.json, the edge tokenizes BYTES texts with
Hugging Face ``tokenizers`` (no torch, transformers or peft there: the device install has none of them), pads each
batch to its longest row, and the dynamic batcher coalesces requests of different lengths."""

import json

import numpy as np
import pytest

from fedge.edge_runtime.serving.tokenizer import HFTokenizer
from tests.edge.bundles import make_bundle
from tests.edge.conftest import device_python, serving, triton_script

pytest.importorskip("transformers")

MIXED = [
    "hi",
    "block my card",
    "I lost my credit card yesterday at the station and need a new one",
    "how much data have I used this month?",
    "roaming",
    "Ça coûte 20 € ?",
    "",
    "my internet connection keeps dropping every evening since the storm last week, please help",
    "cancel",
    "send 40 euros to my brother",
    "🙂",
    "what is my balance",
    "upgrade my phone please",
    "is there an outage",
    "new PIN",
    "x " * 300,
]


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, keys):
    return make_bundle(tmp_path_factory.mktemp("b") / "text", keys[0], "text")


def test_device_tokenizer_gives_transformers_ids_on_the_shipped_data(text_bundle):
    from fedge.core.tasks.intent import IntentTask
    from fedge.core.tasks.text import TextTask

    spec = json.loads((text_bundle / "manifest.json").read_text())["preprocessing"]["tokenizer"]
    device = HFTokenizer(text_bundle / spec["file"], spec["max_len"], spec["pad_id"])
    task = TextTask()
    texts = IntentTask().reference_texts()[0] + MIXED
    for i in range(0, len(texts), 37):  # batches of different longest rows
        chunk = texts[i : i + 37]
        np.testing.assert_array_equal(device.encode_batch(chunk), task.encode_texts(chunk))
    assert device.encode_batch(["x " * 300]).shape == (1, 128)  # truncated to the model's maximum length


@pytest.mark.parametrize("where", ["host", "device"])
def test_mixed_length_texts_through_tritonclient_are_batched_together(where, text_bundle, keys, tmp_path):
    import onnxruntime as ort

    python = device_python() if where == "device" else None
    server_gen = serving(tmp_path, keys, (text_bundle,), "--max-queue-delay-us", "20000", python=python)
    server = next(server_gen)
    try:
        (tmp_path / "texts.json").write_text(json.dumps(MIXED))
        report = triton_script("tests.edge.triton_text_check", server.url, "text", str(tmp_path / "texts.json"))
    finally:
        next(server_gen, None)
    assert report["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1", "1"]}]  # int64 as JSON strings
    assert report["inference_count"] == 5 * len(MIXED)
    assert report["execution_count"] < report["inference_count"]  # texts of different lengths shared batches
    spec = json.loads((text_bundle / "manifest.json").read_text())["preprocessing"]["tokenizer"]
    tok = HFTokenizer(text_bundle / spec["file"], spec["max_len"], spec["pad_id"])
    session = ort.InferenceSession(str(text_bundle / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    for text, answer in zip(MIXED, report["answers"]):
        alone = session.run(None, {"input": tok.encode_batch([text])})[0][0]  # unpadded, on its own
        np.testing.assert_allclose(answer["logits"], alone, atol=1e-4)
        labels = json.loads((text_bundle / "manifest.json").read_text())["labels"]
        assert answer["label"] == labels[int(np.argmax(answer["logits"]))]
