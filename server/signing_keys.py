"""The coordinator's release signing keys over their life: rotate to a new pair without stranding a device, see
where the switch stands, retire the old key once no device needs it.

In ``STATE/keys``: ``release.key``/``release.pub``, the pair new releases are signed with (``fedge export``);
``previous/FINGERPRINT.key|.pub``, pairs rotated out and not yet retired; ``trust.pub``, what devices pin
(``fedge edge serve --trust``): the current key and every previous one. ``retired/`` keeps the public halves of
retired keys (their private halves are deleted), so the history of which key signed what stays readable.

A key can be retired once nothing still depends on it: every model's offered release, and every release a device
(not revoked) reported serving, is signed with the current key. Before that, a device given a trust file
without the old key would refuse its own installed release at its next restart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.edge_runtime.distribution.bundle import MANIFEST, SIGNATURE, generate_keys, load_public_key
from fedge.server.fleet import fleet, offered, release_model
from fedge.server.registry import Registry

CURRENT, TRUST, PREVIOUS, RETIRED = "release", "trust.pub", "previous", "retired"


class KeyringError(FedgeUserError):
    """A key operation that cannot go ahead; the message says why and what to do."""


def fingerprint(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key: how fedge names a key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _public(path: Path) -> Ed25519PublicKey:
    (key,) = load_public_key(path).keys
    return key


@dataclass
class KeyRing:
    """The keys in ``STATE/keys``: ``current`` (fingerprint, key), ``previous`` and ``retired`` {fingerprint:
    key} (retired keys are no longer trusted; they only tell which key signed an old release)."""

    directory: Path
    current: tuple[str, Ed25519PublicKey]
    previous: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    retired: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def load(cls, state: Path) -> KeyRing:
        directory = Path(state) / "keys"
        pub = directory / f"{CURRENT}.pub"
        if not (directory / f"{CURRENT}.key").exists() or not pub.exists():
            raise KeyringError(f"no release signing key in {directory}: run `fedge keys init --out {directory}`")
        key = _public(pub)
        held = lambda sub: {p.stem: _public(p) for p in sorted((directory / sub).glob("*.pub"))}
        return cls(directory, (fingerprint(key), key), held(PREVIOUS), held(RETIRED))

    def signer(self, bundle: Path) -> str | None:
        """The fingerprint of the key (current, previous or retired) that signed ``bundle``; None: none of them,
        or the bundle's manifest or signature is gone."""
        try:
            data, sig = (Path(bundle) / MANIFEST).read_bytes(), (Path(bundle) / SIGNATURE).read_bytes()
        except OSError:
            return None
        for fp, key in [self.current, *self.previous.items(), *self.retired.items()]:
            try:
                key.verify(sig, data)
                return fp
            except InvalidSignature:
                continue
        return None

    def write_trust(self) -> Path:
        """``trust.pub``: the current key, then the previous ones; replaced atomically (devices may copy it any
        time)."""
        target = self.directory / TRUST
        data = b"".join(_pem(k) for k in [self.current[1], *self.previous.values()])
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".trust-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target


def rotate(state: Path) -> KeyRing:
    """A new signing pair becomes current; the one before moves to ``previous/``; ``trust.pub`` holds both."""
    ring = KeyRing.load(state)
    d = ring.directory
    staged = Path(tempfile.mkdtemp(dir=d, prefix=".new-"))
    try:
        generate_keys(staged)
        (d / PREVIOUS).mkdir(exist_ok=True)
        old = ring.current[0]
        for ext in ("key", "pub"):
            os.replace(d / f"{CURRENT}.{ext}", d / PREVIOUS / f"{old}.{ext}")
        for ext in ("key", "pub"):
            os.replace(staged / f"{CURRENT}.{ext}", d / f"{CURRENT}.{ext}")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    ring = KeyRing.load(state)
    ring.write_trust()
    return ring


def status(state: Path, registry: Registry, ring: KeyRing | None = None) -> dict:
    """Which key signed each release, which key each device's serving releases were signed with, and what keeps
    the previous keys from being retired (``blockers``, one line each). ``ring``: the keys, if already loaded."""
    ring = ring or KeyRing.load(state)
    releases = registry.releases()
    signed = {r["id"]: ring.signer(Path(r["path"])) for r in releases}
    current = ring.current[0]
    blockers = []
    for model, rid in sorted(offered(releases).items()):
        if signed[rid] != current:
            blockers.append(
                f"release {rid} ({model}) is offered and signed with {signed[rid] or 'an unknown key'}:"
                " export a release signed with the current key"
            )
    devices = []
    for d in fleet(registry):
        models = [
            {"model": c["model"], "release": c["release"], "signed_by": signed.get(c["release"])} for c in d["current"]
        ]
        devices.append({"name": d["name"], "revoked": bool(d["revoked"]), "models": models})
        if d["revoked"] or not ring.previous:
            continue
        for m in models:
            if m["signed_by"] != current:
                what = f"release {m['release']}" if m["release"] else "a build that is no release of this registry"
                blockers.append(
                    f"device {d['name']} serves {m['model']} from {what}, signed with"
                    f" {m['signed_by'] or 'an unknown key'}: it has not installed a release signed"
                    " with the current key yet"
                )
    return {
        "current": current,
        "previous": sorted(ring.previous),
        "trust_file": str(ring.directory / TRUST),
        "releases": [
            {
                "id": r["id"],
                "model": release_model(r),
                "signed_by": signed[r["id"]],
                "withdrawn": r["withdrawn"] is not None,
            }
            for r in releases
        ],
        "devices": devices,
        "blockers": blockers if ring.previous else [],
    }


def retire(state: Path, registry: Registry, force: bool = False) -> list[str]:
    """Drop every previous key from ``trust.pub`` (their private halves deleted, public halves kept in
    ``retired/``); the fingerprints retired. Refused while something still depends on them, unless ``force``."""
    ring = KeyRing.load(state)
    info = status(state, registry, ring)
    if info["blockers"] and not force:
        raise KeyringError("the previous key is still needed:\n  " + "\n  ".join(info["blockers"]))
    if not ring.previous:
        return []
    (ring.directory / RETIRED).mkdir(exist_ok=True)
    for fp in ring.previous:
        os.replace(ring.directory / PREVIOUS / f"{fp}.pub", ring.directory / RETIRED / f"{fp}.pub")
    ring, retired = (
        KeyRing(ring.directory, ring.current, retired={**ring.retired, **ring.previous}),
        sorted(ring.previous),
    )
    ring.write_trust()
    for fp in retired:
        (ring.directory / PREVIOUS / f"{fp}.key").unlink(missing_ok=True)
    return retired


def describe(info: dict) -> str:
    """``fedge keys status`` for people."""
    lines = [
        f"current key {info['current']}"
        + (f"; previous (still trusted): {', '.join(info['previous'])}" if info["previous"] else ""),
        f"devices pin: {info['trust_file']}",
    ]
    for r in info["releases"]:
        lines.append(
            f"  release {r['id']} ({r['model']}): signed with {r['signed_by'] or 'an unknown key'}"
            + (", withdrawn" if r["withdrawn"] else "")
        )
    for d in info["devices"]:
        served = (
            ", ".join(f"{m['model']}: release {m['release']} ({m['signed_by'] or 'unknown key'})" for m in d["models"])
            or "no models"
        )
        lines.append(f"  device {d['name']}: {served}" + (" [revoked]" if d["revoked"] else ""))
    if info["previous"]:
        lines.append(
            "ready to retire the previous key: "
            + ("no:\n    " + "\n    ".join(info["blockers"]) if info["blockers"] else "yes (fedge keys retire)")
        )
    return "\n".join(lines)
