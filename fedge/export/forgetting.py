"""The gate's guard against forgetting, for the export of a run launched ``--from-release N``: every customer
evaluates the candidate and release N's served model on the holdout of its original data file and, apart, on the
holdout of the files it added (the corrections); the coordinator weights by rows and refuses the candidate when
its accuracy on the original holdouts falls more than ``max_forgetting`` below release N's. The accuracy on the
corrections' holdout is reported beside it: the gain the round was for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedge.export.gate import GateFailed

PREVIOUS_KINDS = ("int8_cpu", "fp32")  # what a device of release N serves, in order of preference


def previous_model(registry_releases: list[dict[str, Any]], release: int) -> Path:
    """Release ``release``'s served model file."""
    row = next((r for r in registry_releases if int(r["id"]) == release), None)
    if row is None:
        raise GateFailed(f"the run started from release {release}, which the registry no longer has")
    bundle = Path(row["path"])
    models = json.loads((bundle / "manifest.json").read_text())["models"]
    kind = next(k for k in PREVIOUS_KINDS if k in models)
    return bundle / models[kind]


def forgetting_report(results: dict[str, dict[str, Any]], release: int, max_forgetting: float) -> dict[str, Any]:
    """The customers' forgetting figures weighted by rows -> the report (``passed`` says whether it holds)."""
    report: dict[str, Any] = {"from_release": release, "max_forgetting": max_forgetting, "per_customer": {}}
    for part in ("original", "added"):
        rows = [(c, r["forgetting"][part]) for c, r in results.items() if part in r.get("forgetting", {})]
        n = sum(f["examples"] for _, f in rows)
        if n:
            report[part] = {
                "examples": n,
                "candidate": sum(f["candidate"] * f["examples"] for _, f in rows) / n,
                "previous": sum(f["previous"] * f["examples"] for _, f in rows) / n,
            }
    for c, r in results.items():
        report["per_customer"][c] = r.get("forgetting", {})
    original = report.get("original")
    if original is None:
        raise GateFailed(f"no customer evaluated release {release} on its original holdout: forgetting unknown")
    report["forgetting"] = original["previous"] - original["candidate"]
    report["passed"] = report["forgetting"] <= max_forgetting
    return report


def check(report: dict[str, Any]) -> None:
    if not report["passed"]:
        o = report["original"]
        raise GateFailed(
            f"the candidate forgets: on the customers' original holdouts ({o['examples']} rows) it is right on"
            f" {o['candidate']:.4f}, release {report['from_release']} on {o['previous']:.4f} (a drop of"
            f" {report['forgetting']:.4f} > --max-forgetting {report['max_forgetting']}); release refused"
        )
