"""``fedge export`` and ``fedge release``: signed releases from the operator's side."""

from __future__ import annotations

from pathlib import Path

from fedge.edge_runtime.common.errors import NotFoundError


def add_parser(sub, state_default: str) -> None:
    p = sub.add_parser("export", help="prune, quantize (federated calibration), gate and sign a release")
    p.add_argument("run", type=int)
    p.add_argument("--round", type=int, help="default: the run's last completed round")
    p.add_argument("--prune", default="none", help="none | 2:4 | unstructured:P")
    p.add_argument("--recovery-rounds", type=int, default=0)
    p.add_argument("--calibration", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--max-accuracy-drop", type=float, default=0.01)
    p.add_argument(
        "--max-forgetting",
        type=float,
        default=None,
        help="a run launched --from-release N: refuse the release if its accuracy on the customers' original"
        " holdouts falls more than this below release N's (default: the run's --max-forgetting, 0.01)",
    )
    p.add_argument(
        "--reference-rows",
        type=int,
        default=128,
        help="holdout rows each customer also evaluates by the"
        " ONNX specification (onnx.reference), to flag INT8 answers that depend on the CPU (0: none)",
    )
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--key", help="release signing key (default: STATE/keys/release.key)")
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_export)
    release = sub.add_parser("release", help="signed releases").add_subparsers(dest="sub", required=True)
    p = release.add_parser("list")
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_release_list)
    p = release.add_parser("show")
    p.add_argument("release", type=int)
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_release_show)
    p = release.add_parser("withdraw", help="stop offering a release: devices go back to the newest one still offered")
    p.add_argument("release", type=int)
    p.add_argument("--reason", default="no reason given")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_release_withdraw)
    p = release.add_parser("restore", help="offer a withdrawn release again")
    p.add_argument("release", type=int)
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_release_restore)


def cmd_export(a) -> int:
    import json

    from rich.console import Console

    from fedge.export.pipeline import ExportConfig, export_release
    from fedge.server.runs import ConsoleProgress

    cfg = ExportConfig(
        run=a.run,
        out=Path(a.out),
        round=a.round,
        prune=a.prune,
        recovery_rounds=a.recovery_rounds,
        calibration=a.calibration,
        max_accuracy_drop=a.max_accuracy_drop,
        max_forgetting=a.max_forgetting,
        reference_rows=a.reference_rows,
        key=Path(a.key) if a.key else None,
    )
    release = export_release(Path(a.state), cfg, say=Console(stderr=True).print, progress=ConsoleProgress())
    if a.json:
        print(json.dumps(release.to_json(), indent=2))
    return 0


def cmd_release_list(a) -> int:
    import json

    from fedge.server.fleet import fleet
    from fedge.server.runs import open_registry

    registry = open_registry(Path(a.state))
    serving: dict[int, int] = {}
    for d in fleet(registry):
        for c in d["current"]:
            if c["release"] is not None:
                serving[c["release"]] = serving.get(c["release"], 0) + 1
    rel = [{**r, "devices": serving.get(r["id"], 0)} for r in registry.releases()]
    if a.json:
        print(json.dumps(rel, indent=2))
    for r in [] if a.json else rel:
        g = r["summary"].get("gate")
        accuracy = f", FP32 {g['fp32_accuracy']:.4f} INT8 {g['int8_accuracy']:.4f}" if g else ""
        print(
            f"release {r['id']}: run {r['run_id']} round {r['round']}, {r['path']}{accuracy}, manifest sha256"
            f" {r['manifest_sha256'][:16]}, serving on {r['devices']} device(s)"
            + (f", WITHDRAWN ({r['withdrawn_reason']})" if r["withdrawn"] else "")
        )
    return 0


def cmd_release_withdraw(a) -> int:
    from fedge.server.fleet import offered, release_model
    from fedge.server.runs import open_registry

    registry = open_registry(Path(a.state))
    registry.withdraw_release(a.release, a.reason)
    releases = registry.releases()
    model = release_model(next(r for r in releases if r["id"] == a.release))
    now = offered(releases).get(model) if model else None
    print(
        f"withdrew release {a.release} ({model}): the release service no longer offers it; "
        + (
            f"devices move to release {now} at their next poll (no download where they still keep it)"
            if now
            else f"no release of {model} is offered now: devices keep serving what they have"
        )
    )
    return 0


def cmd_release_restore(a) -> int:
    from fedge.server.runs import open_registry

    if not open_registry(Path(a.state)).restore_release(a.release):
        raise NotFoundError(f"release {a.release} is not withdrawn")
    print(f"release {a.release} is offered again")
    return 0


def cmd_release_show(a) -> int:
    import json

    from fedge.server.runs import open_registry

    rel = [r for r in open_registry(Path(a.state)).releases() if r["id"] == a.release]
    if not rel:
        raise NotFoundError(f"no release {a.release}")
    from fedge.edge_runtime.distribution.manifest import Manifest

    manifest = Manifest.from_json(json.loads((Path(rel[0]["path"]) / "manifest.json").read_text()))
    print(json.dumps({**rel[0], "manifest": manifest.to_json()}, indent=2))
    return 0
