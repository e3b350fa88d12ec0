"""Runs Flower's SuperNode with two latency fixes applied by wrapping, not forking:

- an idle SuperNode sleeps a hard-coded 3 s between polls (flwr 1.41 ``start_client_internal``), which puts a
  0-3 s stall in front of every message of every round. Here the idle sleep is capped at ``FEDGE_IDLE_POLL_S``
  (default 0.25 s).
- the SuperNode declares a 30 s heartbeat interval, and the SuperLink counts a node as gone only after two
  missed intervals: a crashed customer held every round's stages for up to 60 s. fedge declares
  ``FEDGE_HEARTBEAT_S`` (default 10 s, the SuperLink's minimum), so a dead node is noticed within ~20 s.
- every message starts a fresh ``flwr-clientapp`` process that imports flwr, torch and the task code (1.2-4 s of
  CPU): the SuperNode's SuperExec forks them from a pre-imported parent instead (``fedge.warm_exec``).

Usage: ``python -m client.supernode <flower-supernode arguments>``
"""
from __future__ import annotations

import os
import time as _time


# what a ClientApp process imports for its messages (client.client_app loads torch and the tasks lazily;
# torch.optim's constructors import torch._dynamo on first use, about 0.5 s)
WARM_MODULES = ["flwr.supernode.runtime.run_clientapp", "client.client_app", "client.trainer", "client.job_handler",
                "opacus", "torch._dynamo"]


class _CappedSleepTime:
    def __init__(self, cap: float) -> None:
        self._cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self._cap) if seconds == 3 else seconds)

    def __getattr__(self, name: str):
        return getattr(_time, name)


def main() -> None:
    import flwr.supercore.heartbeat as heartbeat
    import flwr.supernode.fleet_http_connection as fleet
    import flwr.supernode.start_client_internal as sci
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL
    from flwr.supernode.cli import flower_supernode

    from fedge.warm_exec import SuperExecStarter, patch_subprocess

    sci.time = _CappedSleepTime(float(os.environ.get("FEDGE_IDLE_POLL_S", "0.25")))
    interval = max(float(os.environ.get("FEDGE_HEARTBEAT_S", "10")), float(HEARTBEAT_MIN_INTERVAL))
    fleet.HEARTBEAT_DEFAULT_INTERVAL = heartbeat.HEARTBEAT_DEFAULT_INTERVAL = interval
    patch_subprocess("flwr.supernode.start_client_internal", SuperExecStarter(WARM_MODULES))
    flower_supernode()


if __name__ == "__main__":
    main()
