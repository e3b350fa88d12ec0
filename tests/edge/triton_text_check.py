"""Runs in its own process (tritonclient's protos clash with fedge's): 16 clients send texts of mixed lengths to
a text model at once over tritonclient.grpc, as a Triton user would; prints each answer and the server's
statistics as JSON."""

import json
import sys
import threading

import numpy as np
import tritonclient.grpc as grpcclient


def main(url: str, model: str, texts_path: str) -> None:
    texts = json.loads(open(texts_path, encoding="utf-8").read())
    answers: dict[int, dict] = {}
    barrier = threading.Barrier(len(texts))

    def one(i: int) -> None:
        c = grpcclient.InferenceServerClient(url=url)
        arr = np.array([[texts[i].encode()]], dtype=object)
        inp = grpcclient.InferInput("text", [1, 1], "BYTES")
        inp.set_data_from_numpy(arr)
        barrier.wait()
        for _ in range(5):
            res = c.infer(model, [inp])
        answers[i] = {"logits": res.as_numpy("logits").tolist()[0], "label": res.as_numpy("label")[0][0].decode()}
        c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = grpcclient.InferenceServerClient(url=url)
    meta = c.get_model_metadata(model, as_json=True)
    stats = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    print(
        json.dumps(
            {
                "answers": [answers[i] for i in range(len(texts))],
                "inputs": meta["inputs"],
                "inference_count": int(stats["inference_count"]),
                "execution_count": int(stats["execution_count"]),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
