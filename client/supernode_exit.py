"""Why a SuperNode exited, read from its log: the one place the daemon reads Flower's log lines.

Flower 1.41 gives the process that starts a SuperNode no structured signal of its state: no status file, no exit
code per cause (a refused, an unreachable and a lost coordinator all exit 1), no event stream. Its log lines are
the only account, so they are read here, and only here; tests/test_round_failures.py holds each case to lines
Flower really writes. If Flower grows a status API, this module is what changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

JOINED = "SuperNode ID"  # logged once the SuperLink accepted the node
GAVE_UP = "Giving up reconnection"
ATTEMPT_FAILED = "Connection attempt failed"
REFUSAL_MARKERS = (
    "Failed to activate SuperNode",
    "must be registered",
    "CERTIFICATE_VERIFY_FAILED",
    "Server disconnected without sending a response",
    "authentication",
    "Connection reset by peer",
)  # a TLS server resetting a plaintext handshake (seen under load)


class ExitCause(str, Enum):
    LOST = "lost"  # joined, then lost the coordinator (retries exhausted)
    REFUSED = "refused"  # the coordinator refused this node (not registered, TLS, authentication)
    UNREACHABLE = "unreachable"  # never joined: down, unreachable, or a TLS setup it refuses
    EXITED = "exited"  # none of the above


@dataclass(frozen=True)
class SuperNodeExit:
    cause: ExitCause
    line: str = ""  # the log line that says so (REFUSED)

    @property
    def joined(self) -> bool:
        return self.cause is ExitCause.LOST


def classify(log_tail: str) -> SuperNodeExit:
    """What the log written since the SuperNode started says about why it exited."""
    if JOINED in log_tail and GAVE_UP in log_tail:
        return SuperNodeExit(ExitCause.LOST)
    refused = next(
        (line.strip() for line in log_tail.splitlines()[::-1] if any(m in line for m in REFUSAL_MARKERS)), ""
    )
    if refused:
        return SuperNodeExit(ExitCause.REFUSED, refused)
    if ATTEMPT_FAILED in log_tail and JOINED not in log_tail:
        return SuperNodeExit(ExitCause.UNREACHABLE)
    return SuperNodeExit(ExitCause.EXITED)


def joined(log_tail: str) -> bool:
    """Whether the SuperNode joined the coordinator during this log."""
    return JOINED in log_tail
