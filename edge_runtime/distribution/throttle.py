"""A download rate limit for devices on metered or shared links (``fedge edge serve --pull-max-rate``): the
puller reads the release stream no faster than the limit, asks the service for chunks small enough to pace, and
turns off gRPC's window growth, so that HTTP/2 flow control holds the sender back too: what crosses the link
stays within one flow-control window (64 KiB) of the limit."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from fedge.edge_runtime.common.errors import ConfigError

UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_rate(text: str) -> int:
    """Bytes per second from "500000", "500k", "2M", "1.5M" (SI: k = 1000)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:B/s|B)?\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"--pull-max-rate takes bytes per second such as 500k or 2M, got {text!r}")
    return max(1, int(float(m.group(1)) * UNITS[m.group(2).lower()]))


def chunk_for(rate: int) -> int:
    """The chunk to ask for at ``rate``: about an eighth of a second's worth, 4 KiB to 1 MiB."""
    return min(1 << 20, max(4 << 10, rate // 8))


class Throttle:
    """Keeps the average since the first byte at or under ``rate`` bytes/s. ``wait(seconds)`` sleeps and returns
    True if it was told to stop meanwhile (a threading.Event's wait)."""

    def __init__(self, rate: int, wait: Callable[[float], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self._wait, self._clock = rate, wait, clock
        self._start: float | None = None
        self.bytes = 0

    def spend(self, n: int) -> bool:
        """Account for ``n`` bytes just read; wait until the average is back under the rate. False: stop now."""
        if self._start is None:
            self._start = self._clock()
        self.bytes += n
        ahead = self.bytes / self.rate - (self._clock() - self._start)
        return not (ahead > 0 and self._wait(ahead))
