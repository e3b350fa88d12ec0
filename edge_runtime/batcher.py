"""Dynamic batching, as Triton does it: concurrent requests for one model are coalesced into one backend call
(up to ``max_batch_size`` rows, waiting at most ``max_queue_delay_us`` after the first request) and the outputs
are split back by row counts. The delay is only spent while there is concurrency to wait for (the previous
batch held more than one request): a lone client is answered at once. ``instances`` worker threads take batches
from the same queue (Triton's instance count), each running the backend on its own thread."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_us: int = 500
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue_delay_us < 0 or self.instances < 1:
            raise ValueError(f"invalid batching config {self}")


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    def __init__(self, run: Run, cfg: BatchingConfig, on_batch: Callable[[int, float], None] | None = None) -> None:
        self._run, self._cfg, self._on_batch = run, cfg, on_batch
        self._queue: "queue.Queue[_Item | None]" = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, name=f"fedge-batcher-{i}", daemon=True)
                         for i in range(cfg.instances)]
        for t in self._threads:
            t.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        rows = len(next(iter(inputs.values())))
        item = _Item(inputs, rows, time.perf_counter())
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        """Finish everything already queued, then stop."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self) -> None:
        pending: _Item | None = None
        concurrent = False  # did the previous batch coalesce several requests?
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            batch, rows = [first], first.rows
            deadline = first.enqueued + (self._cfg.max_queue_delay_us / 1e6 if concurrent else 0.0)
            stop = False
            while rows < self._cfg.max_batch_size:
                timeout = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if rows + item.rows > self._cfg.max_batch_size:
                    pending = item
                    break
                batch.append(item)
                rows += item.rows
            concurrent = len(batch) > 1
            self._execute(batch, rows)
            if stop:
                return

    def _execute(self, batch: list[_Item], rows: int) -> None:
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                outputs = self._run(batch[0].inputs)
                batch[0].future.set_result(outputs)
            else:
                merged = {k: np.concatenate([it.inputs[k] for it in batch]) for k in batch[0].inputs}
                outputs = self._run(merged)
                offset = 0
                for it in batch:
                    it.future.set_result({k: v[offset : offset + it.rows] for k, v in outputs.items()})
                    offset += it.rows
        except Exception as exc:  # every waiter learns of the failure
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(exc)
        if self._on_batch is not None:
            self._on_batch(rows, max(started - it.enqueued for it in batch))
