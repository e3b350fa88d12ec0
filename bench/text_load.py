"""The text benchmark's load generator, in its own process (tritonclient's protos clash with fedge's): a closed
loop of ``concurrency`` tritonclient.grpc clients, each sending one text at a time (BYTES, batch 1) drawn in turn
from ``texts`` (mixed lengths), for ``seconds``. Prints one JSON line: requests, errors, seconds, latency
percentiles in ms."""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient


def run(url: str, model: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        c = grpcclient.InferenceServerClient(url=url)
        inputs = []
        for t in texts:
            inp = grpcclient.InferInput("text", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[t.encode()]], dtype=object))
            inputs.append(inp)
        c.infer(model, [inputs[0]])  # connect
        start.wait()
        i, mine = k, []
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            try:
                c.infer(model, [inputs[i % len(inputs)]])
            except Exception as exc:
                with lock:
                    errors.append(str(exc)[:200])
                break
            mine.append(time.perf_counter() - t0)
            i += concurrency
        with lock:
            lat.extend(mine)
        c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ms = np.array(lat) * 1e3 if lat else np.array([float("nan")])
    return {
        "requests": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


if __name__ == "__main__":
    url, model, texts_path, concurrency, seconds = sys.argv[1:6]
    texts = json.loads(open(texts_path, encoding="utf-8").read())
    print(json.dumps(run(url, model, texts, int(concurrency), float(seconds))))
