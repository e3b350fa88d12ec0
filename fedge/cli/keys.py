"""``fedge keys``: the coordinator's release signing keys (init, rotate, status, retire)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub, state_default: str) -> None:
    keys = sub.add_parser("keys", help="release signing keys").add_subparsers(dest="sub", required=True)
    p = keys.add_parser("init", help="create the coordinator's Ed25519 release key pair")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_keys_init)
    p = keys.add_parser(
        "rotate",
        help="sign new releases with a new key pair; STATE/keys/trust.pub, for devices,"
        " trusts the old and the new key until the old one is retired",
    )
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_keys_rotate)
    p = keys.add_parser(
        "status",
        help="which key signed each release and each device's releases; whether the previous key can be retired",
    )
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_keys_status)
    p = keys.add_parser(
        "retire",
        help="trust only the current key (STATE/keys/trust.pub) once no release offered"
        " or served by a device needs the previous one",
    )
    p.add_argument("--state", default=state_default)
    p.add_argument(
        "--force",
        action="store_true",
        help="retire even though devices still serve releases signed"
        " with the previous key (they refuse them at their next"
        " restart)",
    )
    p.set_defaults(fn=cmd_keys_retire)


def cmd_keys_init(a) -> int:
    from fedge.edge_runtime.distribution.bundle import generate_keys

    if (Path(a.out) / "release.key").exists():  # losing the key in use would strand every device that pins it
        print(
            f"fedge keys init: {a.out} already holds a release signing key; to replace it without stranding"
            " devices: fedge keys rotate --state STATE",
            file=sys.stderr,
        )
        return 2
    priv, pub = generate_keys(Path(a.out))
    print(
        f"release signing key: {priv} (keep secret)\nwhat devices pin with --trust: {pub.with_name('trust.pub')}"
        f" (the public key, {pub.name}, alone until fedge keys rotate adds the next)"
    )
    return 0


def cmd_keys_rotate(a) -> int:
    from fedge.server.signing_keys import KeyringError, rotate

    try:
        ring = rotate(Path(a.state))
    except KeyringError as exc:
        print(f"fedge keys rotate: {exc}", file=sys.stderr)
        return 2
    old = ", ".join(ring.previous)
    print(
        f"new release signing key {ring.current[0]} (releases exported from now on are signed with it); the"
        f" previous key {old} is kept until retired.\n"
        f"1. give every device {ring.directory / 'trust.pub'} as its --trust file (a running fedge edge serve"
        " takes it without a restart): it trusts both keys\n"
        "2. export a release; devices install it\n"
        f"3. fedge keys retire --state {a.state} (refused while a device still serves a release signed with the"
        " previous key), then give devices the new trust.pub"
    )
    return 0


def cmd_keys_status(a) -> int:
    import json

    from fedge.server.runs import open_registry
    from fedge.server.signing_keys import KeyringError, describe, status

    try:
        info = status(Path(a.state), open_registry(Path(a.state)))
    except KeyringError as exc:
        print(f"fedge keys status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if a.json else describe(info))
    return 0


def cmd_keys_retire(a) -> int:
    from fedge.server.runs import open_registry
    from fedge.server.signing_keys import KeyringError, retire

    try:
        retired = retire(Path(a.state), open_registry(Path(a.state)), a.force)
    except KeyringError as exc:
        print(f"fedge keys retire: {exc}", file=sys.stderr)
        return 2
    trust = Path(a.state) / "keys" / "trust.pub"
    print(
        f"retired {', '.join(retired)}: {trust} now trusts only the current key; give it to every device"
        if retired
        else "no previous key to retire"
    )
    return 0
