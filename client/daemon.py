"""``fedge client start``: the customer's on-premises daemon.

It validates the private data file (bad data fails now, naming file and row), then runs and supervises a real
Flower SuperNode: its own Flower home, runtime port and log under the daemon's state dir (several daemons on one
host never collide), TLS to the coordinator with the customer's CA and SuperNode key. The SuperNode retries by
itself while the coordinator is away; if it exits anyway the daemon restarts it with backoff.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fedge.client.supernode_exit import ExitCause, classify, joined
from fedge.core.procs import fedge_env, free_port, spawn, stop_pid
from fedge.edge_runtime.common.errors import ConfigError


@dataclass(frozen=True)
class ClientConfig:
    coordinator: str
    data: Path
    task: str
    name: str
    state: Path
    certs: Path | None = None  # dir with ca.crt, supernode.key, supernode.key.pub
    insecure: bool = False
    max_restarts: int = -1  # -1: forever
    audit_log: Path | None = None  # JSON lines describing every message that leaves (see client.egress)
    connect_retries: int = 10  # SuperNode gives up after this many failed attempts; the daemon then restarts it
    max_epsilon: float = 0.0  # the customer's privacy limit over all runs (0: no limit); see client.ledger
    delta: float = 1e-5
    base_model: str = ""  # text task: this customer's copy of the pretrained base ("" = default location)
    more_data: tuple[Path, ...] = ()  # --data given again: more files trained on beside the first

    def __post_init__(self) -> None:
        if not self.insecure and self.certs is None:
            raise ConfigError("TLS is on by default: pass --certs DIR (ca.crt + supernode.key) or --insecure")


def node_config(cfg: ClientConfig) -> str:
    items: dict[str, str | float] = {
        "name": cfg.name,
        "task": cfg.task,
        "data-path": str(Path(cfg.data).resolve()),
        "state-dir": str(Path(cfg.state).resolve()),
    }
    if cfg.audit_log:
        items["audit-log"] = str(Path(cfg.audit_log).resolve())
    if cfg.max_epsilon > 0:
        items |= {"max-epsilon": cfg.max_epsilon, "delta": cfg.delta}
    if cfg.base_model:
        items["base-model"] = str(Path(cfg.base_model).resolve())
    if cfg.more_data:
        # os.pathsep-joined, as PATH is: Flower's node config takes no escaped quotes inside a value
        items["more-data"] = os.pathsep.join(str(Path(p).resolve()) for p in cfg.more_data)
    return " ".join(f"{k}={json.dumps(v)}" for k, v in items.items())


def supernode_command(cfg: ClientConfig, runtime_port: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "fedge.client.supernode",
        "--superlink",
        cfg.coordinator,
        "--port",
        str(runtime_port),
        "--node-config",
        node_config(cfg),
        "--max-retries",
        str(cfg.connect_retries),
    ]
    if cfg.insecure:
        return cmd + ["--insecure"]
    assert cfg.certs is not None  # TLS: ClientConfig requires --certs unless --insecure
    certs = Path(cfg.certs).resolve()
    return cmd + [
        "--root-certificates",
        str(certs / "ca.crt"),
        "--auth-supernode-private-key",
        str(certs / "supernode.key"),
        "--auth-supernode-public-key",
        str(certs / "supernode.key.pub"),
    ]


def validate_data(cfg: ClientConfig) -> int:
    """The data files' rows, checked now so that bad data fails before connecting. A text file's labels are
    checked against the run's catalogue in every round (a daemon may start before the run that sets it)."""
    from fedge.core.tasks import get_task

    task = get_task(cfg.task)
    files = [Path(cfg.data), *map(Path, cfg.more_data)]
    if cfg.task in ("text", "intent"):
        from fedge.core.tasks.data import read_text_records

        if cfg.task == "text":
            from fedge.core.tasks.encoder import resolve_base_dir

            resolve_base_dir(cfg.base_model)  # a missing or incomplete base fails here, not in the first round
        return sum(len(read_text_records(f)) for f in files)
    return sum(len(task.load_data(f)) for f in files)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def run(cfg: ClientConfig) -> int:
    """Foreground supervisor loop; returns the exit code."""
    state = Path(cfg.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    n = validate_data(cfg)
    from fedge.client.ledger import Ledger

    spent = Ledger(state).total()  # checks the ledger's hash chain: an edited ledger stops the daemon here
    if cfg.max_epsilon > 0:
        print(
            f"customer {cfg.name!r}: privacy limit ε <= {cfg.max_epsilon:g} at δ = {cfg.delta:g};"
            f" spent so far {spent:.3f} (ledger {state / 'privacy-ledger.jsonl'})",
            flush=True,
        )
    log_path = state / "logs" / "supernode.log"
    runtime_port = free_port()
    (state / "daemon.json").write_text(
        json.dumps({**{k: str(v) for k, v in asdict(cfg).items()}, "runtime_port": runtime_port}, indent=2)
    )
    print(
        f"customer {cfg.name!r}: {n} samples of task {cfg.task!r} in {cfg.data}; connecting to {cfg.coordinator}"
        f" ({'INSECURE' if cfg.insecure else 'TLS + SuperNode auth'}); log {log_path}",
        flush=True,
    )
    proc = None

    def _stop(signum, _frame):
        if proc is not None:
            stop_pid(proc.pid, group=False)
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    restarts, backoff, was_lost = 0, 1.0, False
    while True:
        offset = log_path.stat().st_size if log_path.exists() else 0
        # same process group as the daemon: killing the daemon's group takes the SuperNode and its apps along
        proc = spawn(
            supernode_command(cfg, runtime_port),
            log_path,
            env=fedge_env(state / "flwr-home"),
            cwd=state,
            new_session=False,
        )
        started = time.monotonic()
        code = proc.wait()
        tail = _tail(log_path, 100_000)[-(log_path.stat().st_size - offset) :] if log_path.exists() else ""
        why = classify(tail)  # Flower says why only in its log: read in one place (client/supernode_exit.py)
        lost = why.cause is ExitCause.LOST
        reason = why.cause.value if why.cause is not ExitCause.EXITED else ""
        if lost:
            print(
                f"customer {cfg.name!r}: lost the coordinator at {cfg.coordinator}: no answer after"
                f" {cfg.connect_retries} attempts; starting a new SuperNode",
                file=sys.stderr,
                flush=True,
            )
        elif why.cause is ExitCause.REFUSED:
            print(
                f"customer {cfg.name!r}: refused by the coordinator: {why.line}"
                + (
                    " (expected for up to 2 heartbeat intervals after losing it: it still counts this customer's"
                    " previous SuperNode as connected)"
                    if was_lost
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
        elif why.cause is ExitCause.UNREACHABLE:
            print(
                f"customer {cfg.name!r}: could not connect to the coordinator at {cfg.coordinator} after"
                f" {cfg.connect_retries} attempts (down, unreachable, or refusing this TLS setup)",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"customer {cfg.name!r}: SuperNode exited with code {code}", file=sys.stderr, flush=True)
        was_lost = lost or (was_lost and not joined(tail))
        restarts += 1
        if 0 <= cfg.max_restarts < restarts:
            return 3 if reason else 1
        backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
        time.sleep(backoff)
