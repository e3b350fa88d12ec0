"""The release's monitoring reference, made during the federated gate from the customers' holdout statistics
(counts and sums only, see fedge.client.jobs.monitoring_statistics): the temperature at which the holdouts' mean
calibrated confidence equals their accuracy (what the device's estimate needs; the least-NLL temperature of
classic temperature scaling is reported beside it), and at that temperature the holdouts' predicted-class and
calibrated-confidence histograms. It goes into the manifest's ``monitoring``
section: what devices compute drift against and calibrate their estimated accuracy with.

    >>> ref = monitoring_reference(gate_results)
    >>> ref["temperature"], ref["estimated_accuracy"], ref["holdout_accuracy"]
    (1.41, 0.903, 0.911)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedge.edge_runtime.monitoring.measures import (
    CONFIDENCE_BINS,
    TEMPERATURE_GRID,
    fit_temperature,
    match_temperature,
)


def monitoring_reference(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``monitoring`` section from the gate's per-customer results ({} if no customer sent
    monitoring statistics: a client of an older fedge)."""
    stats = {c: r["monitoring"] for c, r in results.items() if r.get("monitoring")}
    if not stats or any(s["grid"] != list(TEMPERATURE_GRID) for s in stats.values()):
        return {}
    examples = sum(s["examples"] for s in stats.values())
    nll = np.sum([s["nll"] for s in stats.values()], axis=0)
    sums = np.sum([s["confidence_sum"] for s in stats.values()], axis=0)
    correct = sum(s["correct"] for s in stats.values())
    t = match_temperature(TEMPERATURE_GRID, sums, correct, examples)
    i = TEMPERATURE_GRID.index(t)
    confidence_sum = float(sums[i])
    return {
        "measure": "jensen-shannon distance (base 2) of class and confidence histograms; PSI beside it",
        "temperature": t,
        "temperature_fit": "mean calibrated confidence = accuracy on the holdouts (CBPE's target)",
        "temperature_least_nll": fit_temperature(TEMPERATURE_GRID, nll),
        "confidence_bins": CONFIDENCE_BINS,
        "class_counts": np.sum([s["class_counts"] for s in stats.values()], axis=0).astype(int).tolist(),
        "confidence_counts": np.sum([s["confidence_counts"][i] for s in stats.values()], axis=0).astype(int).tolist(),
        "examples": examples,
        "holdout_accuracy": correct / examples,
        "estimated_accuracy": confidence_sum / examples,  # at the fitted temperature, on the same holdouts
        "uncalibrated_estimate": sum(s["confidence_sum"][TEMPERATURE_GRID.index(1.0)] for s in stats.values())
        / examples
        if 1.0 in TEMPERATURE_GRID
        else None,
        "variant": next(iter(stats.values()))["kind"],
        "customers": sorted(stats),
    }
