"""One message exchange of a round (plain fit, evaluate), as Flower's default workflows do it but with a
bounded wait: replies missing after ``timeout`` seconds count as failures instead of hanging the run."""

from __future__ import annotations

import re
from typing import cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common import Code
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid

from fedge.core.wire import Failure, FailureKind

# Flower 1.41 gives an error reply only as text: ``Error.reason`` is "<class 'MODULE.TYPE'>:<'MESSAGE'>" (its
# ClientApp runner formats the exception so); there is no structured field for the exception's type. This is the
# one place that reads it, held by tests/test_coordinator_units.py.
_RAISED = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def error_text(error) -> str:
    """A Flower error reply as an operator reads it: ``DataError: FILE: row 3: unknown label 11`` rather than
    ``Error(code=2, reason="<class 'fedge.core.tasks.base.DataError'>:<'...'>")``."""
    reason = str(getattr(error, "reason", error))
    m = _RAISED.match(reason)
    return f"{m.group(1)}: {m.group(2)}" if m else reason


def _current(context: LegacyContext):
    cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
    rnd = cast(int, cfg[Key.CURRENT_ROUND])
    params = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    return rnd, params


def _exchange(grid: Grid, instructions, message_type: str, to_content, rnd: int, timeout: float):
    proxies = {proxy.node_id: proxy for proxy, _ in instructions}
    out = [
        Message(content=to_content(ins, True), dst_node_id=proxy.node_id, message_type=message_type, group_id=str(rnd))
        for proxy, ins in instructions
    ]
    received = list(grid.send_and_receive(out, timeout=timeout))
    # the grid set each instruction's message_id when it pushed it; an error the SuperLink writes in a node's
    # place ("Node Unavailable") comes from the SuperLink's own node id: a reply is the node's it answers for
    sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in out}
    replies = [(sent_to.get(m.metadata.reply_to_message_id, m.metadata.src_node_id), m) for m in received]
    answered = {nid for nid, _ in replies}
    failures: list = [
        Failure(FailureKind.NO_REPLY, nid, f"no reply within {timeout:.0f}s") for nid in proxies if nid not in answered
    ]
    return proxies, replies, failures


def fit_exchange(timeout: float):
    """A fit workflow (``Workflow`` callable) with bounded waits."""

    def workflow(grid: Grid, context: LegacyContext) -> None:
        rnd, params = _current(context)
        instructions = context.strategy.configure_fit(rnd, params, context.client_manager)
        proxies, replies, failures = _exchange(
            grid, instructions, MessageType.TRAIN, compat.fitins_to_recorddict, rnd, timeout
        )
        results: list = []
        for nid, msg in replies:
            if msg.has_error():
                failures.append(Failure(FailureKind.ERROR, nid, error_text(msg.error)))
                continue
            res = compat.recorddict_to_fitres(msg.content, False)
            (results if res.status.code == Code.OK else failures).append((proxies[nid], res))
        aggregated, _ = context.strategy.aggregate_fit(rnd, results, failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)

    return workflow


def evaluate_exchange(timeout: float):
    def workflow(grid: Grid, context: LegacyContext) -> None:
        rnd, params = _current(context)
        instructions = context.strategy.configure_evaluate(rnd, params, context.client_manager)
        proxies, replies, failures = _exchange(
            grid, instructions, MessageType.EVALUATE, compat.evaluateins_to_recorddict, rnd, timeout
        )
        results: list = []
        for nid, msg in replies:
            if msg.has_error():
                failures.append(Failure(FailureKind.ERROR, nid, error_text(msg.error)))
                continue
            res = compat.recorddict_to_evaluateres(msg.content)
            (results if res.status.code == Code.OK else failures).append((proxies[nid], res))
        context.strategy.aggregate_evaluate(rnd, results, failures)

    return workflow
