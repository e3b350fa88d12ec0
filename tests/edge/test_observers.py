"""The data plane's observer seam: each answered request (model, version, the client's request id, the outputs
before classification, the inputs, timings) reaches every observer, in batches on the observers' own thread, so a
slow or failing observer delays no answer; when observers fall behind, requests are dropped from observation and
counted."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np

from fedge.edge_runtime.serving.observers import Answered, Observers
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import digits_request, slowed_server


def test_observers_see_each_answer_and_never_hold_it_up(tmp_path, keys, digits_bundle) -> None:
    server, _ = next(gen := slowed_server(tmp_path, keys, digits_bundle, delay_s=0.0))
    seen: list[Answered] = []
    release = threading.Event()
    try:
        server.plane.observers.add(seen.extend)
        server.plane.observers.add(lambda a: release.wait(5))  # a slow observer ...
        server.plane.observers.add(lambda a: 1 / 0)  # ... and a broken one
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            req = digits_request()
            req.id = "ticket-42"
            started = time.monotonic()
            for _ in range(3):
                assert stub.ModelInfer(req, timeout=10).outputs
            assert time.monotonic() - started < 3  # answered while the slow observer still waits
        release.set()
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        release.set()
        next(gen, None)
    assert len(seen) == 3
    a = seen[0]
    assert (a.model, a.version, a.request_id, a.cached) == ("digits", 1, "ticket-42", False)
    assert a.outputs["logits"].shape == (1, 10) and a.outputs["logits"].dtype == np.float32
    assert a.inputs["input"].shape == (1, 1, 8, 8) and a.total_s >= a.compute_s > 0


def test_a_backlog_is_dropped_and_counted_not_queued_without_bound() -> None:
    gate = threading.Event()
    observed: list[str] = []
    obs = Observers([lambda batch: gate.wait(5) and observed.extend(a.request_id for a in batch)], capacity=4)
    for i in range(10):
        obs.notify(Answered("m", 1, str(i), {}))
    assert obs.dropped == 6
    gate.set()
    obs.close()
    assert observed == ["0", "1", "2", "3"]


def test_settle_waits_until_everything_notified_was_observed() -> None:
    seen: list[str] = []
    obs = Observers([lambda batch: seen.extend(a.request_id for a in batch)], interval_s=60)  # never by itself
    for i in range(5):
        obs.notify(Answered("m", 1, str(i), {}))
    assert obs.settle(5) and seen == ["0", "1", "2", "3", "4"]
    obs.close()


def test_no_observer_no_thread() -> None:
    obs = Observers()
    assert not obs and obs._thread is None
    obs.notify(Answered("m", 1, "", {}))  # harmless
