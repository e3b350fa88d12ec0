"""Failures travel as typed fields (fedge.core.wire.Failure: kind, node, stage), not as text that another module
parses; the two places that must read Flower's text (an error reply's reason, a SuperNode's log) are held here."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from fedge.client.supernode_exit import ExitCause, classify
from fedge.core.wire import Failure, FailureKind
from fedge.server.exchange import error_text
from fedge.server.round_loop import _new_errors
from fedge.server.strategy import FedgeFedAvg, describe_failure


def _strategy() -> FedgeFedAvg:
    return FedgeFedAvg(
        min_clients=1,
        wait_timeout=1,
        fit_config={},
        initial_parameters=ndarrays_to_parameters([np.zeros(2, np.float32)]),
    )


def test_a_failure_is_the_operators_line_with_typed_fields() -> None:
    f = Failure(FailureKind.NO_REPLY, 41, "no reply within 5s")
    assert f == "node 41: no reply within 5s" and (f.kind, f.node, f.stage) == (FailureKind.NO_REPLY, 41, "fit")
    e = Failure(FailureKind.ERROR, None, "DataError: row 3", stage="evaluate")
    assert e == "evaluate: DataError: row 3" and e.node is None
    back = pickle.loads(pickle.dumps(f))
    assert isinstance(back, Failure) and back.kind is FailureKind.NO_REPLY and back.node == 41


def test_dropouts_are_found_by_node_not_by_text() -> None:
    """Node 12 sent nothing. Node 3's error mentions "node 12" in its text: the old regex over the failures' text
    counted node 12 as accounted for; by the typed node it is reported."""
    s = _strategy()
    out = s.begin_round(1)
    out.sampled = [3, 7, 12]
    out.failures.append(Failure(FailureKind.ERROR, 3, "DataError: rows copied from node 12's file"))
    ok = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.ones(2, np.float32)]), 5, {"customer": "b"})
    s.aggregate_fit(1, [(SimpleNamespace(node_id=7), ok)], [])
    dropped = [f for f in out.failures if f.kind is FailureKind.NO_UPDATE]
    assert [f.node for f in dropped] == [12]
    assert dropped[0] == "unknown customer (node 12): sent no update this round"


def test_flowers_failure_shapes_become_typed() -> None:
    class Error:  # what Flower's SecAgg+ workflow wraps: an error reply without its sender
        reason = "<class 'fedge.core.tasks.data.DataError'>:<'data.csv: row 4: unknown label 'x''>"

    secagg = describe_failure(Exception(Error()))
    assert (secagg.kind, secagg.node, str(secagg)) == (
        FailureKind.ERROR,
        None,
        "DataError: data.csv: row 4: unknown label 'x'",
    )
    status = describe_failure(
        (SimpleNamespace(node_id=9), SimpleNamespace(status=Status(Code.FIT_NOT_IMPLEMENTED, "no"))), "evaluate"
    )
    assert (status.kind, status.node, str(status)) == (
        FailureKind.STATUS,
        9,
        "evaluate: node 9: FIT_NOT_IMPLEMENTED no",
    )


def test_grid_errors_seen_by_the_strategy_are_not_counted_twice() -> None:
    known = [Failure(FailureKind.ERROR, None, "DataError: row 4")]  # SecAgg+ reported it without the node
    grid = SimpleNamespace(
        errors=[
            Failure(FailureKind.ERROR, 5, "DataError: row 4"),
            Failure(FailureKind.ERROR, 6, "BaseModelError: differs from the run's"),
            Failure(FailureKind.ERROR, 7, "DataError: row 4 and more"),
        ]
    )
    assert [f.node for f in _new_errors(grid, 0, known)] == [6, 7]  # a substring is not the same error


def test_error_text_reads_flowers_reason_format() -> None:
    assert error_text(SimpleNamespace(reason="<class 'a.b.GateFailed'>:<'drop 0.2'>")) == "GateFailed: drop 0.2"
    assert error_text(SimpleNamespace(reason="Node Unavailable")) == "Node Unavailable"


# Lines as Flower 1.41's SuperNode logs them (supernode/start_client_internal.py, supercore/retry/*_retry.py,
# supercore/error/catalog.py)
JOINED = "INFO :      SuperNode ID: 4121386215218931474\n"
RETRY = "WARNING :   Connection attempt failed, retrying in 1.31 seconds\n"
GAVE_UP = "ERROR :     Giving up reconnection after 12.40 seconds and 10 tries.\n"
REFUSED = "ERROR :     Failed to activate SuperNode. All SuperNodes must be registered via the CLI.\n"


def test_supernode_exit_causes() -> None:
    assert classify(JOINED + RETRY * 3 + GAVE_UP).cause is ExitCause.LOST
    refused = classify(RETRY + REFUSED)
    assert refused.cause is ExitCause.REFUSED and refused.line.startswith("ERROR :     Failed to activate SuperNode")
    assert classify(RETRY * 10 + GAVE_UP).cause is ExitCause.UNREACHABLE
    assert classify("Traceback (most recent call last):\n  ...\nKeyboardInterrupt\n").cause is ExitCause.EXITED


def test_a_node_gone_after_a_halted_attempt_is_named_in_the_round() -> None:
    """Attempt 1 asks nodes 3, 7 and 12 and halts (node 12 died mid-upload: the SuperLink's error names it);
    attempt 2 asks 3 and 7 and aggregates. Node 12 sent no update this round: the round says so by name."""
    from fedge.server.round_loop import _fit_round

    s = _strategy()
    s.names[12] = "globex"
    ok = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.ones(2, np.float32)]), 5, {"customer": "b"})
    grid = SimpleNamespace(errors=[])
    attempts = iter([[3, 7, 12], [3, 7]])

    def fit(grid, ctx) -> None:
        sampled = next(attempts)
        s.outcome.sampled = sampled
        if 12 in sampled:  # halts: no aggregate
            grid.errors.append(Failure(FailureKind.ERROR, 12, "Reply message objects are unavailable"))
            return
        s.aggregate_fit(2, [(SimpleNamespace(node_id=n), ok) for n in sampled], [])

    ctx = SimpleNamespace(state=SimpleNamespace(array_records={}))
    state = {"w": np.zeros(2, np.float32)}
    outcome = _fit_round(ctx, grid, fit, s, state, ["w"], ["w"], 2, 3)
    assert outcome.aggregated
    assert [str(f) for f in outcome.failures] == [
        "node 12: Reply message objects are unavailable",
        "attempt 1: round halted without an aggregate",
        "globex (node 12): sent no update this round",
    ]
