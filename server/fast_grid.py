"""A Grid wrapper with a short reply-polling interval.

Flower 1.41's HTTP grid sleeps a fixed 3 s between pulls in ``send_and_receive``; a SecAgg+ round makes four
such exchanges, so up to 12 s of every round was waiting. This wrapper keeps Flower's push/pull protocol and
only polls sooner (50 ms, backing off to 250 ms). Everything else is delegated to the wrapped grid.

It also keeps the error replies it receives (``errors``): Flower's SecAgg+ workflow drops them when a round halts,
so without this an operator would read "round halted" where a customer had said why (its data, its base model).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message

from fedge.core.wire import Failure, FailureKind
from fedge.server.exchange import error_text


class FastPollGrid:
    def __init__(self, grid, first_interval: float = 0.05, max_interval: float = 0.25) -> None:
        self._grid = grid
        self._first, self._max = first_interval, max_interval
        self.errors: list[Failure] = []  # each error reply, with its node

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pushed = list(messages)
        pending = set(self._grid.push_messages(pushed))
        # an error the SuperLink writes in a node's place comes from the SuperLink's own id: name the node it
        # answers for (the grid set each message's id when it pushed it)
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in pushed}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        interval = self._first
        while pending:
            got = list(self._grid.pull_messages(pending))
            replies += got
            self.errors += [
                Failure(
                    FailureKind.ERROR,
                    sent_to.get(m.metadata.reply_to_message_id, m.metadata.src_node_id),
                    error_text(m.error),
                )
                for m in got
                if m.has_error()
            ]
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
            interval = min(interval * 1.5, self._max)
        return replies
