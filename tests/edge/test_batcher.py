import threading
import time

import numpy as np
import pytest

from edge_runtime.batcher import BatchingConfig, DynamicBatcher


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
