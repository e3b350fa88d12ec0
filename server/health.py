"""Fleet health on the coordinator: the health summaries devices send with their polls (counts only, see
fedge.edge_runtime.monitoring.summary), checked, tied to the release they describe and kept in the registry; and
the fleet's view of them, per release and per device (``fedge fleet health``).

What is refused (the whole poll answers INVALID_ARGUMENT, and the coordinator goes on): a summary whose counts do
not add up, whose histograms have the wrong size for the release's catalogue, or whose values are out of range.
What is ignored: a summary of a build that is no release of this registry, one over fewer predictions than
``min_predictions``, and everything from a revoked device (it is refused before its summaries are read).

The coordinator trusts counts, not conclusions: drift is recomputed here from the histograms against the
release's own reference (its manifest's ``monitoring`` section), whatever the device computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge_runtime.monitoring.measures import DRIFT_THRESHOLD, drift_score, drifted
from fedge.edge_runtime.monitoring.summary import HealthSummary, check, signals
from fedge.server.registry import Registry

MIN_PREDICTIONS = 50  # a summary over fewer is not kept: one request's answer is never singled out


class HealthBook:
    def __init__(self, registry: Registry, min_predictions: int = MIN_PREDICTIONS) -> None:
        self.registry, self.min_predictions = registry, min_predictions
        self._manifests: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}  # release -> model, labels, ref

    def accept(self, device: str, summaries: list[HealthSummary], releases: list[dict[str, Any]]) -> int:
        """Check every summary (InvalidSummary for the first that cannot be: none is kept then), keep those of
        known releases over enough predictions -> how many were kept."""
        if not summaries:
            return 0
        by_sha = {r["manifest_sha256"]: r for r in releases}
        kept = []
        for s in summaries:
            row = by_sha.get(s.manifest_sha256)
            described = self._describe(row) if row is not None else None
            if described is None:
                continue  # a build that is no release here (installed by hand), or its files are gone
            model, labels, reference = described
            check(s, len(labels))
            if s.window < self.min_predictions:
                continue
            kept.append(
                {
                    "release": int(row["id"]),  # type: ignore[index]
                    "model": model,
                    "signals": signals(s, reference or None),
                    "counts": {
                        "class_counts": list(s.class_counts),
                        "confidence_counts": list(s.confidence_counts),
                        "length_counts": list(s.length_counts),
                    },
                }
            )
        if kept:
            self.registry.record_health(device, kept)
        return len(kept)

    def _describe(self, row: dict[str, Any]) -> tuple[str, tuple[str, ...], dict[str, Any]] | None:
        release = int(row["id"])
        if release not in self._manifests:
            try:
                doc = json.loads((Path(row["path"]) / "manifest.json").read_text())
            except (OSError, ValueError):
                return None
            self._manifests[release] = (
                str(doc["model"]),
                tuple(doc.get("labels", ())),
                dict(doc.get("monitoring", {})),
            )
        return self._manifests[release]

    def reference(self, release: int) -> dict[str, Any]:
        return self._manifests[release][2] if release in self._manifests else {}


def fleet_health(registry: Registry, drift_threshold: float = DRIFT_THRESHOLD) -> list[dict[str, Any]]:
    """Per release: the fleet's totals (predictions, errors, corrections), the estimated accuracy weighted by each
    device's window, production accuracy over every labelled answer, drift of the summed histograms against the
    release's reference, the worst device's p99 latency; and each device's own signals. Releases and devices whose
    drift exceeds ``drift_threshold`` and the drift floor of their sizes (measures.drifted) are marked ``drifted``."""
    book = HealthBook(registry)
    releases = {int(r["id"]): r for r in registry.releases()}
    by_release: dict[int, list[dict[str, Any]]] = {}
    for row in registry.health():
        by_release.setdefault(int(row["release_id"]), []).append(row)
    out = []
    for release, rows in sorted(by_release.items()):
        described = book._describe(releases[release]) if release in releases else None
        reference = described[2] if described else {}
        devices = [
            {
                "device": r["device"],
                "reported": r["reported"],
                **r["signals"],
                "drifted": drifted(r["signals"]["drift_detail"], drift_threshold),
            }
            for r in rows
        ]
        totals = _totals(rows, reference)
        out.append(
            {
                "release": release,
                "model": rows[0]["model"],
                "withdrawn": bool(releases.get(release, {}).get("withdrawn")),
                "reference": bool(reference),
                **totals,
                "drifted": drifted(totals["drift_detail"], drift_threshold),
                "devices": devices,
            }
        )
    return out


def _totals(rows: list[dict[str, Any]], reference: dict[str, Any]) -> dict[str, Any]:
    sig = [r["signals"] for r in rows]
    window = sum(s["window"] for s in sig)
    labelled = sum(s["labelled"] for s in sig)
    requests = sum(s["requests"] + s["errors"] for s in sig)
    classes = np.sum([r["counts"]["class_counts"] for r in rows], axis=0)
    confidence = np.sum([r["counts"]["confidence_counts"] for r in rows], axis=0)
    usable = reference and len(reference.get("class_counts", ())) == len(classes) and window
    detail = drift_score(reference, classes, confidence) if usable else None
    return {
        "device_count": len(rows),
        "predictions": sum(s["predictions"] for s in sig),
        "errors": sum(s["errors"] for s in sig),
        "error_rate": sum(s["errors"] for s in sig) / requests if requests else None,
        "estimated_accuracy": (
            sum(s["estimated_accuracy"] * s["window"] for s in sig if s["estimated_accuracy"] is not None) / window
            if window
            else None
        ),
        "corrections": sum(s["corrections"] for s in sig),
        "labelled": labelled,
        "production_accuracy": (
            sum(s["production_accuracy"] * s["labelled"] for s in sig if s["labelled"]) / labelled if labelled else None
        ),
        "drift": detail["drift"] if detail else None,
        "drift_detail": detail,
        "p99_latency_s": max((s["p99_latency_s"] or 0.0) for s in sig),
        "last_report": max(r["reported"] for r in rows),
    }
