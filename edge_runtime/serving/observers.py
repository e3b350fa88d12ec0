"""Observers of answered requests: the seam where on-device monitoring (class and confidence histograms, drift)
and feedback capture see each inference, without growing the data plane's hot path.

The data plane hands each answered request to :meth:`Observers.notify` (a bounded put that never waits; nothing at
all when no observer is registered); one thread of its own calls the observers, so a slow or failing observer never
delays an answer. When observers fall behind by ``capacity`` requests, further ones are dropped and counted, not
queued without bound.

    >>> seen = []
    >>> observers = Observers([seen.append])
    >>> observers.notify(Answered("digits", 3, "req-1", {"logits": logits}, {"input": x}, total_s=0.002))
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("fedge.edge")


@dataclass(frozen=True)
class Answered:
    """One answered inference, as observers see it."""

    model: str
    version: int
    request_id: str  # the client's KServe v2 ``id`` ("" if it sent none)
    outputs: dict[str, np.ndarray]  # the model's outputs before classification (logits), or the cached answer
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # the decoded request inputs (text as BYTES)
    total_s: float = 0.0  # from the request's arrival to its answer
    compute_s: float = 0.0  # queueing + batching + the backend (0 for a cache hit)
    cached: bool = False  # answered from the response cache
    features: dict[str, np.ndarray] = field(default_factory=dict)  # what the model was fed (a text model's token ids)


Observer = Callable[[Answered], None]


class Observers:
    def __init__(self, observers: Iterable[Observer] = (), capacity: int = 4096) -> None:
        self._observers: list[Observer] = list(observers)
        self._queue: queue.Queue[Answered | None] = queue.Queue(maxsize=capacity)
        self.dropped = 0  # answers not observed because the observers were ``capacity`` behind
        self._thread: threading.Thread | None = None
        if self._observers:
            self._start()

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)
        if self._thread is None:
            self._start()

    def notify(self, answered: Answered) -> None:
        """From the data plane, after the answer is ready: never blocks."""
        if not self._observers:
            return
        try:
            self._queue.put_nowait(answered)
        except queue.Full:
            self.dropped += 1

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedge-observers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (answered := self._queue.get()) is not None:
            for observer in list(self._observers):
                try:
                    observer(answered)
                except Exception:  # an observer's bug must not stop the others, or serving
                    log.exception("observer %r failed on a %s answer", observer, answered.model)
            self._queue.task_done()

    def settle(self, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout`` s, off the event loop) until every answer notified so far was observed: a
        correction that names a request answered a moment ago then finds it. Returns whether it settled."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and self._thread is not None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Observe what was notified so far, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None
