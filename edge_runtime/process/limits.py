"""Process limits a server facing its network needs: as many open files as the system lets it have (each client
connection is one), and a log that says when the limit is hit without writing a traceback per refused
connection."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("fedge.edge")


def raise_open_files_limit() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE raised to the hard one (systemd's default soft limit is 1024) -> (before, now)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
    return soft, max(soft, target)


class QuietLoopErrors:
    """An event loop's exception handler that logs what asyncio reports (an accept() that failed for want of file
    descriptors, a connection reset mid-handshake) at most once per ``interval_s`` per kind, with how many were
    left unsaid, instead of a traceback each time (measured before: 77,000 tracebacks, 34 MB, in 20 s)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        kind = f"{context.get('message', 'error')}: {type(exc).__name__ if exc else ''}"
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval_s) < self.interval_s:
            self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
            return
        self._last[kind] = now
        unsaid = self._unsaid.pop(kind, 0)
        log.warning(
            "%s%s%s",
            context.get("message", "event loop error"),
            f" ({exc})" if exc else "",
            f" (and {unsaid} more like it in the last {self.interval_s:.0f} s)" if unsaid else "",
        )
