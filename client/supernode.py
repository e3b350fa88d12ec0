"""Runs Flower's SuperNode with one latency fix applied by wrapping, not forking: an idle SuperNode sleeps a
hard-coded 3 s between polls (flwr 1.41 ``start_client_internal``), which puts a 0-3 s stall in front of
every message of every round. Here the idle sleep is capped at ``FEDGE_IDLE_POLL_S`` (default 0.25 s).

Usage: ``python -m client.supernode <flower-supernode arguments>``
"""
from __future__ import annotations

import os
import time as _time


class _CappedSleepTime:
    def __init__(self, cap: float) -> None:
        self._cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self._cap) if seconds == 3 else seconds)

    def __getattr__(self, name: str):
        return getattr(_time, name)


def main() -> None:
    import flwr.supernode.start_client_internal as sci
    from flwr.supernode.cli import flower_supernode

    sci.time = _CappedSleepTime(float(os.environ.get("FEDGE_IDLE_POLL_S", "0.25")))
    flower_supernode()


if __name__ == "__main__":
    main()
