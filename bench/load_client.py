"""The serving benchmark's load generator, in its own process (tritonclient bundles protos of the same names as
fedge's): ``tritonclient.grpc`` (or ``tritonclient.http.aio`` for the REST endpoint) exactly as a Triton user
drives a server. Reads one JSON command per stdin line, runs a closed loop of ``concurrency`` outstanding batch-1
requests (``async_infer``, or ``async_stream_infer`` on one stream; each reply sends the next; optionally with the
input and output in system shared memory) for ``seconds``, answers one JSON line: requests, errors, seconds,
latency percentiles in ms."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient


def run(
    url: str,
    model: str,
    input_name: str,
    shape: list[int],
    concurrency: int,
    seconds: float,
    samples: bool = False,
    stream: bool = False,
    shm: bool = False,
    output_name: str = "",
    tls_ca: str = "",
    http: bool = False,
    priority: int = 0,
) -> dict:
    """``http``: ``url`` is the REST endpoint, driven by tritonclient.http.aio (binary tensors, its default).
    ``stream``: each client sends its requests over a bidirectional stream of its own (``async_stream_infer``)
    instead of one RPC per request. ``shm``: the input is read from, and ``output_name`` written into, system
    shared memory (Triton's extension; an output region per outstanding request). ``tls_ca``: dial over TLS,
    verifying the server with this CA certificate. ``priority``: every request's (tritonclient's ``priority=``;
    0: none)."""
    tls = {"ssl": True, "root_certificates": tls_ca} if tls_ca else {}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if http:
        import asyncio

        lat, errors, elapsed = asyncio.run(_http_loop(url, model, input_name, x, concurrency, seconds))
        return _summary(lat, errors, elapsed, samples)
    inp = grpcclient.InferInput(input_name, shape, "FP32")
    outputs = [None] * concurrency
    regions = SharedRegions(url, x, concurrency) if shm else None
    if regions is not None:
        inp.set_shared_memory(regions.input, x.nbytes)
        outputs = [[regions.output(i, output_name)] for i in range(concurrency)]
    else:
        inp.set_data_from_numpy(x)
    lat, errors = [], []
    lock, done = threading.Lock(), threading.Event()
    outstanding = [concurrency]
    deadline = time.perf_counter() + seconds

    def finished(t0: float, error, send) -> None:
        t1 = time.perf_counter()
        with lock:
            if error is not None:
                errors.append(str(error))
            else:
                lat.append(t1 - t0)
            again = t1 < deadline and not errors
            if not again:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    done.set()
        if again:
            send()

    if stream:
        clients = [grpcclient.InferenceServerClient(url=url, **tls) for _ in range(concurrency)]

        def streamer(client, outs):
            sent = [0.0]

            def send():
                sent[0] = time.perf_counter()
                client.async_stream_infer(model, [inp], outputs=outs)

            client.start_stream(callback=lambda result, error: finished(sent[0], error, send))
            return send

        senders = [streamer(c, outs) for c, outs in zip(clients, outputs)]
    else:
        clients = [grpcclient.InferenceServerClient(url=url, **tls)]

        def unary(outs):
            def send():
                t0 = time.perf_counter()
                clients[0].async_infer(
                    model, [inp], lambda result, error: finished(t0, error, send), outputs=outs, priority=priority
                )

            return send

        senders = [unary(outs) for outs in outputs]
    started = time.perf_counter()
    for send in senders:
        send()
    done.wait(seconds + 60)
    elapsed = time.perf_counter() - started
    for c in clients:
        if stream:
            c.stop_stream()
        c.close()
    if regions is not None:
        regions.close()
    return _summary(lat, errors, elapsed, samples)


async def _http_loop(
    url: str, model: str, input_name: str, x: np.ndarray, concurrency: int, seconds: float
) -> tuple[list[float], list[str], float]:
    """``concurrency`` coroutines on one aiohttp session, each sending its next request when its reply is in."""
    import asyncio

    import tritonclient.http.aio as httpclient

    client = httpclient.InferenceServerClient(url=url, conn_limit=concurrency)
    inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    lat, errors = [], []
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline and not errors:
            t0 = time.perf_counter()
            try:
                await client.infer(model, [inp])
            except Exception as exc:
                errors.append(str(exc))
                return
            lat.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return lat, errors, elapsed


def _summary(lat: list[float], errors: list[str], elapsed: float, samples: bool) -> dict:
    ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
    out = {
        "requests": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": elapsed,
        "throughput": len(lat) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
    }
    if samples:
        out["lat_ms"] = [round(float(v), 4) for v in ms] if lat else []
    return out


class SharedRegions:
    """One input region holding ``x`` and ``n`` output regions, created and registered with the server."""

    OUTPUT_BYTES = 1 << 16

    def __init__(self, url: str, x: np.ndarray, n: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self.shm, self.client = shm, grpcclient.InferenceServerClient(url=url)
        tag = f"bench_{os.getpid()}"
        self.input = f"{tag}_in"
        self.handles = [shm.create_shared_memory_region(self.input, f"/{self.input}", x.nbytes)]
        shm.set_shared_memory_region(self.handles[0], [x])
        self.client.register_system_shared_memory(self.input, f"/{self.input}", x.nbytes)
        self.outputs = [f"{tag}_out{i}" for i in range(n)]
        for name in self.outputs:
            self.handles.append(shm.create_shared_memory_region(name, f"/{name}", self.OUTPUT_BYTES))
            self.client.register_system_shared_memory(name, f"/{name}", self.OUTPUT_BYTES)

    def output(self, i: int, name: str) -> grpcclient.InferRequestedOutput:
        out = grpcclient.InferRequestedOutput(name)
        out.set_shared_memory(self.outputs[i], self.OUTPUT_BYTES)
        return out

    def close(self) -> None:
        for name in (self.input, *self.outputs):
            self.client.unregister_system_shared_memory(name)
        for h in self.handles:
            self.shm.destroy_shared_memory_region(h)
        self.client.close()


def live_rtt(url: str, calls: int = 500) -> dict:
    """p50 of a bare round trip (ServerLive): the floor any request over Python gRPC pays on this machine."""
    client = grpcclient.InferenceServerClient(url=url)
    client.is_server_live()
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.is_server_live()
        lat.append(time.perf_counter() - t0)
    client.close()
    return {"p50_ms": float(np.median(lat) * 1e3)}


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        out = live_rtt(cmd["url"]) if cmd.pop("mode", "infer") == "live" else run(**cmd)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
