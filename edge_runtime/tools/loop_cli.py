"""The loop on the device, from the command line: ``fedge edge serve``'s monitoring and feedback flags, and
``fedge edge feedback export`` (the corrections as training rows in the customer data format). Imports only the
edge runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedge.edge_runtime.common.durations import parse_duration
from fedge.edge_runtime.monitoring.monitor import MonitorConfig


def monitor_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("monitoring and feedback (docs/LOOP.md)")
    g.add_argument(
        "--no-monitoring", action="store_true", help="keep no health signals (and take no feedback): nothing observes"
    )
    g.add_argument("--health-window", type=int, default=1000, help="predictions the health signals describe")
    g.add_argument(
        "--health-min-requests",
        type=int,
        default=50,
        help="report a version's health to the coordinator only after this many new predictions (default 50)",
    )
    g.add_argument(
        "--feedback-store",
        metavar="DIR",
        help="take corrections (POST /v2/models/NAME/feedback) into a local SQLite store here; never sent anywhere",
    )
    g.add_argument(
        "--keep-inputs",
        default="7d",
        metavar="DURATION",
        help="with --feedback-store: keep each single-row request's input this long (7d, 12h, 30m), so that a"
        " correction can name the request's id",
    )
    g.add_argument(
        "--feedback-labels",
        default="",
        metavar="A,B",
        help="labels corrections may carry beyond the served catalogue (intents the next run adds with --labels)",
    )
    g.add_argument("--max-kept-inputs", type=int, default=200_000, help="the store's cap on kept inputs (oldest go)")
    g.add_argument("--max-corrections", type=int, default=100_000, help="the store's cap on corrections (oldest go)")


def monitor_config(a: argparse.Namespace) -> MonitorConfig:
    return MonitorConfig(
        enabled=not a.no_monitoring,
        window=a.health_window,
        min_predictions=a.health_min_requests,
        feedback_store=Path(a.feedback_store) if a.feedback_store else None,
        keep_inputs_s=parse_duration(a.keep_inputs),
        max_kept_inputs=a.max_kept_inputs,
        max_corrections=a.max_corrections,
        new_labels=tuple(x.strip() for x in a.feedback_labels.split(",") if x.strip()),
    )


def cmd_feedback_export(a: argparse.Namespace) -> int:
    from fedge.edge_runtime.common.errors import MissingFileError
    from fedge.edge_runtime.monitoring.feedback import STORE_FILE, FeedbackStore, export_corrections

    if not (Path(a.store) / STORE_FILE).exists():
        raise MissingFileError(f"no feedback store in {a.store} (fedge edge serve --feedback-store {a.store})")
    store = FeedbackStore(Path(a.store), keep_s=parse_duration("7d"))
    try:
        rows = export_corrections(store, Path(a.out), a.model)
    finally:
        store.close()
    print(f"wrote {rows} correction(s) to {a.out}" + (f" (model {a.model})" if a.model else ""))
    return 0


def add_feedback_parser(edge: argparse._SubParsersAction) -> None:
    feedback = edge.add_parser("feedback", help="the corrections this device took").add_subparsers(
        dest="feedback_sub", required=True
    )
    p = feedback.add_parser("export", help="write the corrections as training rows (text,label CSV; or .npz)")
    p.add_argument("--store", required=True, metavar="DIR", help="the --feedback-store directory")
    p.add_argument("--out", required=True, help="corrections.csv (text models) or corrections.npz (tensor models)")
    p.add_argument("--model", default="", help="only this model's corrections")
    p.set_defaults(fn=cmd_feedback_export)
