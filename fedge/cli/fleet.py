"""``fedge fleet health``: how each release does on the devices that serve it, from their health summaries
(counts only; docs/LOOP.md, docs/PRIVACY.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_parser(sub, state_default: str) -> None:
    fleet = sub.add_parser("fleet", help="the devices' view of the releases they serve").add_subparsers(
        dest="sub", required=True
    )
    p = fleet.add_parser("health", help="per release and per device: accuracy (estimated, production), drift, errors")
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--drift-threshold",
        type=float,
        default=0.1,
        help="mark releases and devices whose drift (Jensen-Shannon distance from the release's reference) exceeds"
        " this (default 0.1)",
    )
    p.set_defaults(fn=cmd_fleet_health)


def cmd_fleet_health(a) -> int:
    from fedge.server.health import fleet_health
    from fedge.server.runs import open_registry

    releases = fleet_health(open_registry(Path(a.state)), a.drift_threshold)
    if a.json:
        print(json.dumps(releases, indent=2))
        return 0
    if not releases:
        print("no device has reported health yet (devices report after --health-min-requests predictions)")
    now = time.time()
    for r in releases:
        print(
            f"release {r['release']} ({r['model']}{', withdrawn' if r['withdrawn'] else ''}):"
            f" {r['device_count']} device(s), {r['predictions']} predictions, " + _signals(r)
        )
        for d in r["devices"]:
            ago = now - d["reported"]
            print(f"  {d['device']}: {d['predictions']} predictions, {_signals(d)}, last report {ago:.0f} s ago")
    return 0


def _signals(s: dict) -> str:
    def pct(x) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    floor = (s.get("drift_detail") or {}).get("floor")
    drift = (
        "not computed (no reference)"
        if s["drift"] is None
        else f"{s['drift']:.3f}" + (f" (chance alone: {floor:.3f})" if floor is not None else "")
    )
    return (
        f"estimated accuracy {pct(s['estimated_accuracy'])}, production accuracy {pct(s['production_accuracy'])}"
        f" ({s['labelled']} labelled of {s['corrections']} corrections), drift {drift}"
        f"{' DRIFTED' if s['drifted'] else ''}, error rate {pct(s['error_rate'])},"
        f" p99 {1000 * (s['p99_latency_s'] or 0):.1f} ms"
    )
