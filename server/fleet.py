"""The fleet as the coordinator sees it: what each device serves, against the release the service offers now.

Devices report at every poll (see :mod:`server.release_service`); this module only reads the registry.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedge.edge_runtime.common.errors import BundleError
from fedge.edge_runtime.distribution.manifest import Manifest
from fedge.server.offer import Candidate, LatestRelease, OfferPolicy, targets
from fedge.server.registry import Registry


def release_model(row: dict) -> str | None:
    """The model a release is of (its manifest's), or None if its files are gone."""
    try:
        return Manifest.from_json(json.loads((Path(row["path"]) / "manifest.json").read_text())).model
    except (OSError, ValueError, BundleError):
        return None


def candidates(releases: list[dict]) -> list[Candidate]:
    """Registry.releases() rows as the offer policy sees them (releases whose files are gone left out)."""
    return [
        Candidate(int(row["id"]), model, row["withdrawn"] is not None)
        for row in releases
        if (model := release_model(row))
    ]


def offered(releases: list[dict], device: str = "", policy: OfferPolicy | None = None) -> dict[str, int]:
    """Model -> the release ``device`` should serve under ``policy`` (by default: the newest not withdrawn)."""
    return targets((policy or LatestRelease()).offer(device, candidates(releases)))


def fleet(registry: Registry, policy: OfferPolicy | None = None) -> list[dict]:
    """Every device seen or revoked, each current model marked ``up to date``, ``behind`` (an older release than
    the one offered to that device), ``withdrawn`` (a release since withdrawn), or ``unknown`` (a bundle that is
    no release of this registry, e.g. installed by hand)."""
    releases = registry.releases()
    withdrawn = {r["id"] for r in releases if r["withdrawn"] is not None}
    known = candidates(releases)
    policy = policy or LatestRelease()
    out = []
    for d in registry.devices():
        target = targets(policy.offer(d["name"], known))
        models = []
        for c in d["current"]:
            rel = c.get("release")
            state = (
                "unknown"
                if rel is None
                else "withdrawn"
                if rel in withdrawn
                else "up to date"
                if rel == target.get(c["model"])
                else "behind"
            )
            models.append({**c, "offered": target.get(c["model"]), "state": state})
        out.append({**d, "current": models})
    return out


def describe(device: dict, now: float | None = None) -> str:
    """One line per device for ``fedge coordinator devices``."""
    now = time.time() if now is None else now
    who = {True: "certificate", False: "self-named", None: "never seen"}[device["authenticated"]]
    seen = f"last seen {_ago(now - device['last_seen'])} from {device['address']}" if device["last_seen"] else ""
    models = ", ".join(
        f"{c['model']}: "
        + (f"release {c['release']}" if c["release"] else "unknown build")
        + f" (local v{c['local_version']}, {c['state']})"
        for c in device["current"]
    )
    revoked = (
        (
            f"REVOKED {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(device['revoked']))}"
            f" ({device['revoked_reason']})"
        )
        if device["revoked"]
        else ""
    )
    return "  ".join(x for x in (device["name"], f"[{who}]", seen, models or "no models", revoked) if x)


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"
