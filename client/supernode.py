"""Runs Flower's SuperNode with two latency fixes applied by wrapping, not forking:

- an idle SuperNode sleeps a hard-coded 3 s between polls (flwr 1.41 ``start_client_internal``), which puts a
  0-3 s stall in front of every message of every round. Here the idle sleep is capped at ``FEDGE_IDLE_POLL_S``
  (default 0.25 s).
- the SuperNode declares a 30 s heartbeat interval, and the SuperLink counts a node as gone only after two
  missed intervals: a crashed customer held every round's stages for up to 60 s. fedge declares
  ``FEDGE_HEARTBEAT_S`` (default 10 s, the SuperLink's minimum), so a dead node is noticed within ~20 s.
- a failed heartbeat is retried with exponential backoff up to 20 s: after a SuperLink outage of ~10 s (a
  coordinator restart) the next retry can land more than 2 x 10 s after the last heartbeat, and the SuperLink
  counts the node gone although it is back and already pulling messages; its round's instruction then fails
  with "Node Unavailable". fedge caps the backoff at ``FEDGE_HEARTBEAT_RETRY_S`` (default 2 s).
- the Fleet API calls (pull, push) back off the same way, up to Flower's ``MAX_RETRY_DELAY`` (20 s): a node came
  back ~30 s after a 15 s outage. fedge caps it at ``FEDGE_RECONNECT_MAX_S`` (default 10 s; the waits keep
  Flower's full jitter, so restarted coordinators are not hit by every node at once).
- a SuperNode that gives up reconnecting hangs on exit (Flower 1.41); fedge's exits, so the daemon restarts it.
- every message starts a fresh ``flwr-clientapp`` process that imports flwr, torch and the task code (1.2-4 s of
  CPU): the SuperNode's SuperExec forks them from a pre-imported parent instead (``fedge.core.warm_exec``).

Usage: ``python -m client.supernode <flower-supernode arguments>``
"""

from __future__ import annotations

import os
import sys
import time as _time
import traceback

# what a ClientApp process imports for its messages (client.client_app loads torch and the tasks lazily;
# torch.optim's constructors import torch._dynamo on first use, about 0.5 s)
WARM_MODULES = [
    "flwr.supernode.runtime.run_clientapp",
    "fedge.client.client_app",
    "fedge.client.trainer",
    "fedge.client.job_handler",
    "opacus",
    "torch._dynamo",
]
# and for a customer of the text task: its messages build a Hugging Face encoder with LoRA adapters
TEXT_MODULES = ["transformers.models.bert.modeling_bert", "peft", "fedge.core.tasks.text"]


def warm_modules(argv: list[str]) -> list[str]:
    """The modules to pre-import for the customer this SuperNode serves (its ``--node-config`` names the task)."""
    node_config = argv[argv.index("--node-config") + 1] if "--node-config" in argv[:-1] else ""
    return WARM_MODULES + (TEXT_MODULES if 'task="text"' in node_config else [])


class _CappedSleepTime:
    def __init__(self, cap: float) -> None:
        self._cap = cap

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self._cap) if seconds == 3 else seconds)

    def __getattr__(self, name: str):
        return getattr(_time, name)


def cap_backoff(module, cap: float) -> None:
    """Flower's retry invokers build their waits from ``exponential(max_delay=...)``, looked up in the module
    that makes them (``flwr.supercore.heartbeat``, ``flwr.supercore.retry.http_retry``) when they are made."""
    from flwr.supercore.retry import exponential

    def capped(base_delay: float = 1, multiplier: float = 2, max_delay: float | None = None):
        return exponential(min(base_delay, cap), multiplier, cap if max_delay is None else min(max_delay, cap))  # type: ignore[arg-type]  # Flower annotates max_delay as int; it takes seconds

    module.exponential = capped


def main() -> None:
    import flwr.supercore.heartbeat as heartbeat
    import flwr.supercore.retry.http_retry as http_retry
    import flwr.supernode.fleet_http_connection as fleet
    import flwr.supernode.start_client_internal as sci
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL
    from flwr.supernode.cli import flower_supernode

    from fedge.core.warm_exec import SuperExecStarter, patch_subprocess

    # stands in for the time module Flower imported
    sci.time = _CappedSleepTime(float(os.environ.get("FEDGE_IDLE_POLL_S", "0.25")))  # type: ignore[assignment]
    interval = max(float(os.environ.get("FEDGE_HEARTBEAT_S", "10")), float(HEARTBEAT_MIN_INTERVAL))
    fleet.HEARTBEAT_DEFAULT_INTERVAL = heartbeat.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[assignment]
    cap_backoff(heartbeat, float(os.environ.get("FEDGE_HEARTBEAT_RETRY_S", "2")))
    cap_backoff(http_retry, float(os.environ.get("FEDGE_RECONNECT_MAX_S", "10")))
    patch_subprocess("flwr.supernode.start_client_internal", SuperExecStarter(warm_modules(sys.argv)))
    try:
        flower_supernode()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    # a SuperNode that gives up reconnecting (--max-retries) leaves Flower's Runtime API server thread (uvicorn,
    # not a daemon thread) running, and the interpreter would wait for it forever: the client daemon would never
    # see the SuperNode exit, so never start a new one. Its work is done here; leave without waiting.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
