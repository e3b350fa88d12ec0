"""The requests a model's batch workers wait on, by priority level, as Triton's dynamic batcher keeps them: every
level-1 request is taken before any level-2 one, and so on; within a level, in arrival order. A model without
priority levels has one level (0). Each level's queue is bounded by its own ``max_queue_size`` (the caller checks
:meth:`RequestQueue.size` against it).

Stopping: :meth:`stop` wakes ``n`` workers with None once everything queued before it has been taken, so the
requests already waiting are computed, not dropped."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class RequestQueue(Generic[T]):
    def __init__(self) -> None:
        self._levels: dict[int, deque[T]] = {}
        self._order: list[int] = []  # the levels that have a deque, highest priority (lowest number) first
        self._count = 0
        self._stops = 0
        self._cond = threading.Condition()

    def put(self, item: T, level: int = 0) -> None:
        self._add(item, level, front=False)

    def put_front(self, item: T, level: int = 0) -> None:
        """Back at the head of its level: a request taken that did not fit the batch being gathered, so that it
        goes next in its level, and after anything of a higher level that arrived meanwhile."""
        self._add(item, level, front=True)

    def _add(self, item: T, level: int, front: bool) -> None:
        with self._cond:
            if level not in self._levels:
                self._levels[level] = deque()
                self._order = sorted(self._levels)
            (self._levels[level].appendleft if front else self._levels[level].append)(item)
            self._count += 1
            self._cond.notify()

    def stop(self, n: int) -> None:
        """``n`` workers get None, each once the queue is empty."""
        with self._cond:
            self._stops += n
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """The first request of the highest level that has one; None: stop. ``timeout`` (s; None: wait for ever, <=
        0: do not wait) passing with nothing to take raises queue.Empty, as queue.Queue does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._count and not self._stops:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            if not self._count:
                self._stops -= 1
                return None
            for level in self._order:
                waiting = self._levels[level]
                if waiting:
                    self._count -= 1
                    return waiting.popleft()
            raise AssertionError("the count says a request waits, but no level has one")

    def get_nowait(self) -> T | None:
        return self.get(timeout=0)

    def size(self, level: int | None = None) -> int:
        """Requests waiting at ``level``, or at every level (None)."""
        with self._cond:
            return self._count if level is None else len(self._levels.get(level, ()))
