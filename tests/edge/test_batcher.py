import asyncio
import threading
import time

import numpy as np
import pytest

from fedge.edge_runtime.common.errors import Overloaded
from fedge.edge_runtime.serving.batcher import BatchingConfig, DynamicBatcher, QueuePolicy


def test_concurrent_requests_are_coalesced_and_split_back_in_order():
    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2}

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=16, max_queue_delay_us=20_000))
    results = {}

    def client(i):
        results[i] = b.submit({"x": np.full((1, 3), i, np.float32)}).result(timeout=10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert all(np.array_equal(results[i]["y"], np.full((1, 3), 2 * i)) for i in range(32))
    assert sum(calls) == 32 and max(calls) <= 16 and len(calls) < 32


def test_backend_failure_reaches_every_waiter():
    def run(inputs):
        raise RuntimeError("backend down")

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=4, max_queue_delay_us=10_000))
    futures = [b.submit({"x": np.zeros((1, 2))}) for _ in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError, match="backend down"):
            f.result(timeout=5)
    b.close()


def test_a_lone_request_does_not_wait_for_the_queue_delay():
    b = DynamicBatcher(lambda inputs: inputs, BatchingConfig(max_batch_size=8, max_queue_delay_us=200_000))
    took = []
    for _ in range(5):  # one client, one request at a time: never any company to wait for
        t0 = time.perf_counter()
        b.submit({"x": np.zeros((1, 2))}).result(timeout=5)
        took.append(time.perf_counter() - t0)
    b.close()
    assert max(took) < 0.1, took  # a 200 ms delay would show


def test_instances_run_batches_in_parallel():
    active, peak, lock = [0], [0], threading.Lock()

    def run(inputs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return inputs

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=1, max_queue_delay_us=0, instances=3))
    futures = [b.submit({"x": np.full((1, 1), i)}) for i in range(9)]
    assert [int(f.result(timeout=5)["x"][0, 0]) for f in futures] == list(range(9))
    b.close()
    assert peak[0] == 3


def test_gpu_buckets_pad_odd_batches_and_return_only_the_real_rows(tmp_path, keys):
    """The CUDA backend runs one session per fixed batch size (a CUDA session re-plans its convolutions on every
    shape change): a batch of 5 runs padded to 16 in the 16-session and comes back as exactly the 5 rows an
    unpadded run gives; warm_buckets runs every bucket's session at its own size."""
    from fedge.edge_runtime.serving.backends import OrtBackend, gpu_buckets
    from tests.edge.bundles import make_bundle, reference_logits

    assert gpu_buckets(64) == (1, 4, 16, 64) and gpu_buckets(48) == (1, 4, 16, 48) and gpu_buckets(1) == (1,)
    bundle = make_bundle(tmp_path / "b", keys[0])
    be = OrtBackend.load(bundle / "model.fp32.onnx", "onnxruntime-cpu", "test", buckets=gpu_buckets(64))
    assert len({id(s) for s in be.buckets.values()}) == 4 and be.buckets[1] is be.session
    seen = []
    for size, sess in be.buckets.items():
        real = sess.run
        sess.run = lambda names, feeds, size=size, real=real: (
            seen.append((size, len(feeds["input"]))) or real(names, feeds)
        )
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    out = be.run({"input": x})["logits"]
    assert seen == [(16, 16)] and out.shape == (5, 10)
    np.testing.assert_allclose(out, reference_logits(bundle, x), rtol=1e-5, atol=1e-5)
    seen.clear()
    be.warm_buckets()
    assert seen == [(1, 1), (4, 4), (16, 16), (64, 64)]


def test_async_callers_on_a_loop_are_coalesced_and_settled_on_that_loop():
    calls, settled_on = [], []

    def run(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 3}

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=16, max_queue_delay_us=20_000))

    async def main():
        loop_thread = threading.get_ident()

        async def one(i):
            out = await b.submit_async({"x": np.full((1, 2), i, np.float32)})
            settled_on.append(threading.get_ident() == loop_thread)
            return out["y"]

        return await asyncio.gather(*(one(i) for i in range(40)))

    results = asyncio.run(main())
    b.close()
    assert all(np.array_equal(r, np.full((1, 2), 3 * i)) for i, r in enumerate(results))
    assert sum(calls) == 40 and max(calls) <= 16 and len(calls) < 40 and all(settled_on)


def test_async_failure_reaches_every_waiter_and_a_cancelled_waiter_harms_nobody():
    release = threading.Event()

    def run(inputs):
        release.wait(5)
        if (inputs["x"] < 0).any():
            raise RuntimeError("backend down")
        return inputs

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=50_000))

    async def main():
        blocker = b.submit_async({"x": np.zeros((1, 1))})  # the batcher is busy with this one
        await asyncio.sleep(0.05)
        gone = b.submit_async({"x": np.ones((1, 1))})
        kept = b.submit_async({"x": np.ones((1, 1)) * 2})
        gone.cancel()  # the client hung up while queued
        release.set()
        assert (await blocker)["x"][0, 0] == 0 and (await kept)["x"][0, 0] == 2
        bad = [b.submit_async({"x": -np.ones((1, 1))}) for _ in range(3)]
        return await asyncio.gather(*bad, return_exceptions=True)

    errors = asyncio.run(main())
    b.close()
    assert [str(e) for e in errors] == ["backend down"] * 3


def test_requests_cancelled_while_queued_are_not_computed():
    release, calls = threading.Event(), []

    def run(inputs):
        calls.append(inputs["x"][:, 0].tolist())
        release.wait(5)
        return inputs

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=20_000))

    async def main():
        blocker = b.submit_async({"x": np.zeros((1, 1))})  # the batcher is busy with this one
        await asyncio.sleep(0.05)
        queued = [b.submit_async({"x": np.full((1, 1), i)}) for i in range(1, 6)]
        for i in (0, 2, 4):  # requests 1, 3 and 5: their clients hung up while they waited
            queued[i].cancel()
        release.set()
        return await blocker, [await queued[i] for i in (1, 3)]

    _first, kept = asyncio.run(main())
    b.close()
    assert calls == [[0.0], [2.0, 4.0]]
    assert [k["x"][0, 0] for k in kept] == [2.0, 4.0]


def test_each_call_is_accounted_before_its_requests_are_answered_and_accounting_cannot_strand_them():
    seen = []

    def account(rows, queued, compute_s):
        seen.append((rows, len(queued), compute_s))
        if len(seen) == 2:
            raise ValueError("a broken metrics sink")

    def run(inputs):
        time.sleep(0.02)
        return inputs

    b = DynamicBatcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=0), account)
    b.submit({"x": np.zeros((3, 2))}).result(timeout=5)
    assert seen and seen[0][:2] == (3, 1) and seen[0][2] >= 0.02  # already there when the answer is
    b.submit({"x": np.zeros((1, 2))}).result(timeout=5)  # its accounting raises: still answered
    b.submit({"x": np.zeros((1, 2))}).result(timeout=5)  # and the worker lives on
    b.close()
    assert len(seen) == 3


def _blocked_batcher(policy: QueuePolicy = QueuePolicy(), **config):  # noqa: B008 (frozen: one shared default is fine)
    """A batcher whose backend holds each call until ``release`` is set; ``started`` is set once it is busy.
    ``config``: more BatchingConfig fields."""
    release, started, calls = threading.Event(), threading.Event(), []

    def run(inputs):
        calls.append(inputs["x"][:, 0].tolist())
        started.set()
        release.wait(5)
        return inputs

    cfg = BatchingConfig(**{"max_batch_size": 8, "max_queue_delay_us": 0, "queue": policy, **config})
    return DynamicBatcher(run, cfg), release, started, calls


def test_a_full_queue_refuses_at_once_and_serves_what_it_holds():
    b, release, started, calls = _blocked_batcher(QueuePolicy(max_queue_size=2))
    busy = b.submit({"x": np.zeros((1, 1))})
    assert started.wait(5)  # the worker runs it: the queue is empty again
    queued = [b.submit({"x": np.full((1, 1), i)}) for i in (1, 2)]
    with pytest.raises(Overloaded, match="queue is full"):
        b.submit({"x": np.full((1, 1), 3)})
    release.set()
    assert [f.result(5)["x"][0, 0] for f in (busy, *queued)] == [0, 1, 2]
    b.submit({"x": np.full((1, 1), 4)}).result(5)  # room again once the queue drained
    b.close()
    assert calls == [[0.0], [1.0, 2.0], [4.0]]


@pytest.mark.parametrize(
    "policy, request_us, refused",
    [
        (QueuePolicy(timeout_us=50_000), 0, True),  # the model's timeout
        (QueuePolicy(timeout_us=10_000_000, allow_timeout_override=True), 50_000, True),  # the request's, shorter
        (QueuePolicy(), 50_000, False),  # overrides not allowed: ignored
        (QueuePolicy(timeout_us=10_000_000), 0, False),  # long enough
    ],
)
def test_a_request_that_waited_past_its_timeout_is_refused_not_computed(policy, request_us, refused):
    b, release, started, calls = _blocked_batcher(policy)
    busy = b.submit({"x": np.zeros((1, 1))})
    assert started.wait(5)
    waiting = b.submit({"x": np.ones((1, 1))}, timeout_us=request_us)
    time.sleep(0.15)  # past 50 ms, while the backend is still busy
    release.set()
    busy.result(5)
    if refused:
        with pytest.raises(Overloaded, match="queue timeout"):
            waiting.result(5)
    else:
        assert waiting.result(5)["x"][0, 0] == 1
    b.close()
    assert calls == ([[0.0]] if refused else [[0.0], [1.0]])


def test_higher_priority_requests_are_taken_first_and_arrival_order_holds_within_a_level():
    b, release, started, calls = _blocked_batcher(max_batch_size=1, priority_levels=3, default_priority_level=2)
    busy = b.submit({"x": np.zeros((1, 1))})
    assert started.wait(5)
    # (value, priority): 0 and one past the levels get the default level, 2
    waiting = [b.submit({"x": np.full((1, 1), v)}, priority=p) for v, p in ((1, 3), (2, 0), (3, 1), (4, 7), (5, 1))]
    assert b.pending() == 5
    release.set()
    for f in (busy, *waiting):
        f.result(5)
    b.close()
    assert calls == [[0.0], [3.0], [5.0], [2.0], [4.0], [1.0]]


def test_without_priority_levels_a_priority_changes_nothing():
    b, release, started, calls = _blocked_batcher(max_batch_size=1)
    busy = b.submit({"x": np.zeros((1, 1))})
    assert started.wait(5)
    waiting = [b.submit({"x": np.full((1, 1), v)}, priority=p) for v, p in ((1, 3), (2, 1))]
    release.set()
    for f in (busy, *waiting):
        f.result(5)
    b.close()
    assert calls == [[0.0], [1.0], [2.0]]


def test_each_priority_level_has_its_own_queue_policy():
    b, release, started, calls = _blocked_batcher(
        QueuePolicy(max_queue_size=2),
        priority_levels=2,
        default_priority_level=2,
        priority_queue_policy=((1, QueuePolicy(max_queue_size=1)),),
    )
    busy = b.submit({"x": np.zeros((1, 1))})
    assert started.wait(5)
    urgent = b.submit({"x": np.full((1, 1), 1)}, priority=1)
    with pytest.raises(Overloaded, match="1 requests wait at priority level 1"):
        b.submit({"x": np.full((1, 1), 2)}, priority=1)
    routine = [b.submit({"x": np.full((1, 1), v)}) for v in (3, 4)]  # level 2 has room for two of its own
    with pytest.raises(Overloaded, match="2 requests wait at priority level 2"):
        b.submit({"x": np.full((1, 1), 5)})
    release.set()
    assert [f.result(5)["x"][0, 0] for f in (busy, urgent, *routine)] == [0, 1, 3, 4]
    b.close()
    assert calls == [[0.0], [1.0, 3.0, 4.0]]  # one batch takes the levels in order, as Triton's does


@pytest.mark.parametrize(
    "config",
    [
        dict(priority_levels=-1),
        dict(priority_levels=2),  # no default level
        dict(priority_levels=2, default_priority_level=3),
        dict(default_priority_level=1),  # no levels
        dict(priority_levels=2, default_priority_level=1, priority_queue_policy=((3, QueuePolicy()),)),
    ],
)
def test_inconsistent_priority_settings_are_refused(config):
    with pytest.raises(ValueError, match="batching config"):
        BatchingConfig(**config)


def test_a_request_that_did_not_fit_a_batch_does_not_hold_back_a_higher_priority_one():
    """Batches of at most 4 rows: A and B (3 rows each, routine) are queued behind a busy call; B does not fit
    with A, and while [A] runs an urgent C (2 rows) arrives: C goes before B."""
    gate, calls = threading.Semaphore(0), []

    def run(inputs):
        calls.append(int(inputs["x"][0, 0]))
        gate.acquire(timeout=5)
        return inputs

    b = DynamicBatcher(
        run,
        BatchingConfig(
            max_batch_size=4, max_queue_delay_us=0, instances=1, priority_levels=2, default_priority_level=2
        ),
    )
    rows = lambda value, n: {"x": np.full((n, 1), value, np.float32)}
    futures = [b.submit(rows(0, 1))]
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    futures += [b.submit(rows(1, 3)), b.submit(rows(2, 3))]  # A, B
    gate.release()  # the busy call ends; the worker gathers [A] (B does not fit) and runs it
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    futures.append(b.submit(rows(3, 2), priority=1))  # C, urgent, while [A] runs
    for _ in range(3):
        gate.release()
    for f in futures:
        f.result(5)
    b.close()
    assert calls == [0, 1, 3, 2]
