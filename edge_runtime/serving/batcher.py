"""Dynamic batching, as Triton does it: concurrent requests for one model are coalesced into one backend call
(up to ``max_batch_size`` rows, waiting at most ``max_queue_delay_us`` after the first request) and the outputs
are split back by row counts. The delay is only spent while there is concurrency to wait for (the previous
batch held more than one request): a lone client is answered at once. ``instances`` worker threads take batches
from the same queue (Triton's instance count: by default 2 on the CPU, 1 on a GPU), each running the backend on
its own thread.

Triton's queue policy bounds the waiting: at most ``max_queue_size`` requests wait (one more is refused at once),
and a request that waited past its timeout is refused instead of computed, so an overloaded device answers
"busy" quickly rather than everyone late (both UNAVAILABLE, as in Triton). With ``priority_levels``, as in
Triton, a request's ``priority`` (1 the highest) picks its level: workers take every waiting request of a level
before any of the next, and each level has its own queue policy (``priority_queue_policy``, else the default).

The gRPC server awaits results on its asyncio loop (:meth:`DynamicBatcher.submit_async`): a finished batch wakes
the loop once and settles all of its requests there, instead of waking one handler thread per request."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError, Overloaded
from fedge.edge_runtime.serving.request_queue import RequestQueue

log = logging.getLogger("fedge.edge")
Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ``dynamic_batching.default_queue_policy`` (timeout action REJECT)."""

    max_queue_size: int = 0  # requests that may wait; one more is refused at once. 0: no limit
    timeout_us: int = 0  # a request that waited longer is refused, not computed. 0: no limit
    allow_timeout_override: bool = False  # a request's own ``timeout`` parameter (us) may shorten timeout_us

    def __post_init__(self) -> None:
        if self.max_queue_size < 0 or self.timeout_us < 0:
            raise ConfigError(f"invalid queue policy {self}")

    def deadline(self, enqueued: float, request_timeout_us: int = 0) -> float | None:
        """When a request enqueued at ``enqueued`` (perf_counter) expires; None: never."""
        us = self.timeout_us
        if self.allow_timeout_override and request_timeout_us > 0:
            us = min(us, request_timeout_us) if us else request_timeout_us
        return enqueued + us / 1e6 if us else None


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_us: int = 500
    instances: int = 0  # batch workers; 0: the backend's default (backends.default_instances)
    queue: QueuePolicy = QueuePolicy()
    response_cache: bool = False  # answer repeated requests from the server's cache (when it has one)
    priority_levels: int = 0  # Triton's: 0, every request alike; N: a request's priority 1..N picks its level
    default_priority_level: int = 0  # the level of a request without a priority (or one outside 1..N)
    priority_queue_policy: tuple[tuple[int, QueuePolicy], ...] = ()  # (level, its policy); others: ``queue``

    def __post_init__(self) -> None:
        if min(self.max_batch_size - 1, self.max_queue_delay_us, self.instances, self.priority_levels) < 0:
            raise ConfigError(f"invalid batching config {self}")
        levels = range(1, self.priority_levels + 1)
        default_ok = self.default_priority_level in levels if levels else self.default_priority_level == 0
        if not default_ok or any(level not in levels for level, _ in self.priority_queue_policy):
            raise ConfigError(f"invalid priority levels in batching config {self}")

    def level(self, priority: int) -> int:
        """The queue level of a request asking for ``priority`` (Triton's rule: 0 or one past the levels gets the
        default level); 0 when the model has no priority levels."""
        if not self.priority_levels:
            return 0
        return priority if 1 <= priority <= self.priority_levels else self.default_priority_level

    def policy(self, level: int) -> QueuePolicy:
        """The queue policy of ``level`` (asked at every request: no mapping built, usually nothing to scan)."""
        return next((p for lv, p in self.priority_queue_policy if lv == level), self.queue)


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float
    future: Future | asyncio.Future = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None  # set: ``future`` belongs to this loop
    trace: Any = None  # a tracing.Trace: told when its batch computed
    expires: float | None = None  # perf_counter time past which it is refused, not computed
    level: int = 0  # its priority level (0: the model has none)


class DynamicBatcher:
    def __init__(
        self,
        run: Run,
        cfg: BatchingConfig,
        on_batch: Callable[[int, list[float], float], None] | None = None,
        pad_value: int | None = None,
    ) -> None:
        """``on_batch(rows, each request's queue time, backend seconds)`` is told of every backend call;
        ``pad_value``: requests whose inputs differ in their last axis (token ids of different lengths) are padded
        on the right with it to the longest, so they share a batch (None: inputs of one shape only)."""
        self._run, self._cfg, self._on_batch, self._pad = run, cfg, on_batch, pad_value
        self._queue: RequestQueue[_Item] = RequestQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"fedge-batcher-{i}", daemon=True)
            for i in range(max(cfg.instances, 1))
        ]  # 0 (the backend's default) is resolved by the model
        for t in self._threads:
            t.start()

    def submit(self, inputs: dict[str, np.ndarray], timeout_us: int = 0, priority: int = 0) -> Future:
        return self._enqueue(_Item(inputs, len(next(iter(inputs.values()))), time.perf_counter()), timeout_us, priority)

    def submit_async(
        self, inputs: dict[str, np.ndarray], trace=None, timeout_us: int = 0, priority: int = 0
    ) -> asyncio.Future:
        """From a coroutine on the running loop: a future of that loop, settled on it. ``trace`` (a
        tracing.Trace) gets the timestamps of the batch this request runs in; ``timeout_us``: the request's own
        queue timeout (honoured when the queue policy allows overrides); ``priority``: the request's own (1 the
        highest; 0: the model's default level)."""
        loop = asyncio.get_running_loop()
        return self._enqueue(
            _Item(inputs, len(next(iter(inputs.values()))), time.perf_counter(), loop.create_future(), loop, trace),
            timeout_us,
            priority,
        )

    def _enqueue(self, item: _Item, timeout_us: int, priority: int):
        item.level = self._cfg.level(priority)
        policy = self._cfg.policy(item.level)
        if policy.max_queue_size and self._queue.size(item.level) >= policy.max_queue_size:
            where = f"at priority level {item.level}" if item.level else "for the model"
            raise Overloaded(
                f"the model's queue is full ({policy.max_queue_size} requests wait {where}, its"
                " max_queue_size); retry later"
            )
        item.expires = policy.deadline(item.enqueued, timeout_us)
        self._queue.put(item, item.level)
        return item.future

    def pending(self) -> int:
        """Requests queued and not yet taken into a batch."""
        return self._queue.size()

    def close(self) -> None:
        """Finish everything already queued, then stop."""
        self._queue.stop(len(self._threads))
        for t in self._threads:
            t.join(timeout=30)

    def _loop(self) -> None:
        """Requests whose caller has gone (a cancelled future: the client hung up or its deadline passed while
        it was queued) are dropped instead of computed, so an overloaded server does not spend itself on answers
        nobody waits for."""
        concurrent = False  # did this worker's last batch coalesce several requests?
        while True:
            first = self._queue.get()
            if first is None:
                return
            if first.future.cancelled():
                continue
            batch, rows, stop = self._gather(first, concurrent)
            concurrent = len(batch) > 1
            now = time.perf_counter()
            live = [it for it in batch if not it.future.cancelled()]  # gone while the batch gathered
            expired = [it for it in live if it.expires is not None and it.expires < now]
            if expired:  # Triton's timeout action REJECT
                self._deliver(
                    expired,
                    [None] * len(expired),
                    Overloaded("the request waited longer than its queue timeout for the model; retry later"),
                )
                live = [it for it in live if it.expires is None or it.expires >= now]
            if live:
                self._execute(live, rows if len(live) == len(batch) else sum(it.rows for it in live))
            if stop:
                return

    def _gather(self, first: _Item, concurrent: bool) -> tuple[list[_Item], int, bool]:
        """``first`` plus what arrives before its deadline, up to max_batch_size rows: (batch, rows, whether the
        stop sentinel came). A request that does not fit goes back to the head of its level, so a higher-priority
        one that arrives meanwhile still goes first. The delay is only spent while requests are concurrent."""
        batch, rows = [first], first.rows
        deadline = first.enqueued + (self._cfg.max_queue_delay_us / 1e6 if concurrent else 0.0)
        while rows < self._cfg.max_batch_size:
            timeout = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, rows, True
            if item.future.cancelled():
                continue
            if rows + item.rows > self._cfg.max_batch_size:
                self._queue.put_front(item, item.level)
                break
            batch.append(item)
            rows += item.rows
        return batch, rows, False

    def _execute(self, batch: list[_Item], rows: int) -> None:
        started = time.perf_counter()
        merged_at = ran_at = started
        try:
            if len(batch) == 1:
                results = [self._run(batch[0].inputs)]
                ran_at = time.perf_counter()
            else:
                merged = {k: merge_rows([it.inputs[k] for it in batch], self._pad) for k in batch[0].inputs}
                merged_at = time.perf_counter()
                outputs = self._run(merged)
                ran_at = time.perf_counter()
                results, offset = [], 0
                for it in batch:
                    results.append({k: v[offset : offset + it.rows] for k, v in outputs.items()})
                    offset += it.rows
            failure = None
        except Exception as exc:  # every waiter learns of the failure
            results, failure = [{} for _ in batch], exc
        ended = time.perf_counter()
        computed = ended - started
        for it in batch:
            if it.trace is not None:
                it.trace.compute(started, merged_at, ran_at, ended)
        if self._on_batch is not None:  # before anyone is answered: a client reading statistics sees its call
            try:
                self._on_batch(rows, [started - it.enqueued for it in batch], computed)
            except Exception:  # accounting must never strand the waiters
                log.exception("batch accounting failed")
        self._deliver(batch, results, failure)

    @staticmethod
    def _deliver(batch: list[_Item], results: list, failure: Exception | None) -> None:
        """Answer each request (on its own loop, one wake-up per loop), or fail them all with ``failure``."""
        on_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for it, res in zip(batch, results):
            if it.loop is not None:
                on_loop.setdefault(it.loop, []).append((it.future, res))
            else:
                _set(it.future, res, failure)
        for loop, settled in on_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled, failure)
            except RuntimeError:  # the loop is closed: the server stopped, nobody is waiting
                pass


def merge_rows(parts: list[np.ndarray], pad_value: int | None) -> np.ndarray:
    """Requests' rows as one batch; with ``pad_value``, 2-D parts of different widths are right-padded to the widest."""
    widths = {p.shape[-1] for p in parts if p.ndim == 2}
    if pad_value is None or len(widths) < 2:
        return np.concatenate(parts)
    width = max(widths)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=pad_value) for p in parts])


def _set(fut, result, failure: Exception | None) -> None:
    if failure is not None:
        fut.set_exception(failure)
    else:
        fut.set_result(result)


def _settle(settled: list, failure: Exception | None) -> None:
    for fut, res in settled:
        if not fut.done():  # a cancelled request (client gone) is skipped
            _set(fut, res, failure)
