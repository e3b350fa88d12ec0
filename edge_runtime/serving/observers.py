"""Observers of answered requests: the seam where on-device monitoring (class and confidence histograms, drift)
and feedback capture see each inference, without growing the data plane's hot path.

The data plane hands each answered request to :meth:`Observers.notify`: one length check and one deque append
(nothing at all when no observer is registered; no lock taken, no thread woken). A thread of the observers' own
takes what accumulated every ``interval_s`` and gives it to each observer as one batch, so that observers work on
arrays of many answers at once and the serving thread is not made to hand over the GIL per answer. A slow or
failing observer never delays an answer; when observers fall ``capacity`` answers behind, further ones are dropped
and counted, not queued without bound.

    >>> seen = []
    >>> observers = Observers([seen.extend])
    >>> observers.notify(Answered("digits", 3, "req-1", {"logits": logits}, {"input": x}, total_s=0.002))
    >>> observers.settle()   # everything notified so far was observed
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

log = logging.getLogger("fedge.edge")
_NONE: Mapping[str, np.ndarray] = MappingProxyType({})


class Answered(NamedTuple):
    """One answered inference, as observers see it (a tuple: cheap to make on the request path)."""

    model: str
    version: int
    request_id: str  # the client's KServe v2 ``id`` (or the one the device made; "" if none)
    outputs: Mapping[str, np.ndarray]  # the model's outputs before classification (logits), or the cached answer
    inputs: Mapping[str, np.ndarray] = _NONE  # the decoded request inputs (text as BYTES)
    total_s: float = 0.0  # from the request's arrival to its answer
    compute_s: float = 0.0  # queueing + batching + the backend (0 for a cache hit)
    cached: bool = False  # answered from the response cache
    features: Mapping[str, np.ndarray] = _NONE  # what the model was fed (a text model's token ids)


Observer = Callable[[Sequence[Answered]], None]  # called with the answers of one interval, in order


class Observers:
    def __init__(self, observers: Iterable[Observer] = (), capacity: int = 4096, interval_s: float = 0.05) -> None:
        self._observers: list[Observer] = list(observers)
        self.capacity, self.interval_s = capacity, interval_s
        self._pending: collections.deque[Answered] = collections.deque()
        self.dropped = 0  # answers not observed because the observers were ``capacity`` behind
        self._notified = 0  # answers taken in (dropped ones not counted)
        self._observed = 0  # answers every observer has seen
        self._wake, self._closing = threading.Event(), False
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
        """From the data plane, after the answer is ready: never blocks, never wakes anything."""
        if not self._observers:
            return
        if len(self._pending) >= self.capacity:
            self.dropped += 1
            return
        self._pending.append(answered)  # deque.append is atomic: the observers' thread pops from the other end
        self._notified += 1

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fedge-observers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            if batch:
                for observer in list(self._observers):
                    try:
                        observer(batch)
                    except Exception:  # an observer's bug must not stop the others, or serving
                        log.exception("observer %r failed on %d answers", observer, len(batch))
                self._observed += len(batch)
            if self._closing and not self._pending:
                return

    def settle(self, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout`` s, off the event loop) until every answer notified so far was observed: a
        correction that names a request answered a moment ago then finds it. Returns whether it settled."""
        target, deadline = self._notified, time.monotonic() + timeout
        while self._observed < target and self._thread is not None:
            self._wake.set()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Observe what was notified so far, then stop the thread."""
        if self._thread is not None:
            self._closing = True
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None
