"""The operator's side of a run: launch (or resume) a Flower run of fedge's app on the coordinator, follow it
through the registry with a progress bar, and report. Flower's own CLI exits 0 even for failed runs; here the
registry's status decides, and a ServerApp that died without recording one counts as failed."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.server.fab import write_app, write_overrides
from fedge.server.flwr_cli import FlowerCLI
from fedge.server.from_release import check_base, release_start
from fedge.server.registry import Registry, registry_path
from fedge.server.run_config import RunConfig


class RunFailed(FedgeUserError, RuntimeError):
    pass


@dataclass(frozen=True)
class RunOutcome:
    """What a launch (or a resume) ended with: the run's id and its final status in the registry."""

    run_id: int
    status: str  # "completed", "failed", ...
    reason: str = ""  # why it failed, as the registry recorded it

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


class RunProgress:
    """What a launcher tells about the run it follows; this one tells nothing (a run started by another stage,
    such as export's recovery rounds). ConsoleProgress shows it to the operator."""

    def started(self, cfg: RunConfig, flower_id: int, completed: int) -> None: ...

    def round_done(self, rec, completed: int) -> None: ...

    def ended(self, run: dict) -> None: ...

    def note(self, text: str) -> None: ...


class ConsoleProgress(RunProgress):
    """The operator's view on stderr: the run's header, a progress bar with a line per round, the failure."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self._bar: Progress | None = None

    def started(self, cfg: RunConfig, flower_id: int, completed: int) -> None:
        self.console.print(
            f"run {cfg.fedge_run_id}: task {cfg.task}, rounds {cfg.start_round + 1}..{cfg.num_rounds},"
            f" SecAgg+ {'on' if cfg.secagg else 'off'} (Flower run {flower_id})"
        )
        self._bar = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("", total=cfg.num_rounds, completed=completed)

    def round_done(self, rec, completed: int) -> None:
        assert self._bar is not None, "started() first"
        acc = f"{rec.accuracy:.4f}" if rec.accuracy is not None else "-"
        self._bar.console.print(
            f"round {rec.round:>3}  accuracy {acc}  clients {','.join(rec.clients)}"
            f"  {rec.wall_s:.1f}s" + (f"  failures: {len(rec.failures)}" if rec.failures else "")
        )
        self._bar.update(self._task, completed=completed, description=f"accuracy {acc}")

    def ended(self, run: dict) -> None:
        if self._bar is not None:
            self._bar.stop()
        if run["status"] == "failed":
            self.console.print(f"[red]run {run['id']} failed:[/red] {run.get('reason')}")

    def note(self, text: str) -> None:
        self.console.print(text)


def open_registry(state: Path) -> Registry:
    return Registry(registry_path(Path(state).resolve()))


def resolve_init(registry: Registry, init: str) -> str:
    """``--init`` is a checkpoint path or an earlier run's id (its last completed round)."""
    if not init:
        return ""
    if init.isdigit():
        last = registry.last_round(int(init))
        if last is None:
            raise ValueError(f"--init {init}: run {init} has no completed round")
        return last.checkpoint
    path = Path(init).resolve()
    if not path.exists():
        raise FileNotFoundError(f"--init {init}: no such checkpoint")
    return str(path)


def with_base_identity(cfg: RunConfig) -> RunConfig:
    """A text run records the coordinator's base directory and its sha256, which every customer's copy must match."""
    if cfg.task != "text":
        return cfg
    from fedge.core.tasks.encoder import base_sha256, resolve_base_dir

    base = resolve_base_dir(cfg.base_model)
    return cfg.with_(base_model=str(base), base_sha256=base_sha256(base))


def launch(state: Path, cfg: RunConfig, as_json: bool = False, progress: RunProgress | None = None) -> RunOutcome:
    """Start a fedge run of ``cfg`` and follow it to its end -> the run and how it ended (``progress``: what is
    shown meanwhile, by default the operator's console view)."""
    state = Path(state).resolve()
    registry = open_registry(state)
    cfg = release_start(registry, cfg)  # --from-release: its checkpoint, catalogue and LoRA settings
    cfg = with_base_identity(cfg.with_(state_dir=str(state), init=resolve_init(registry, cfg.init)))
    check_base(registry, cfg)
    cfg = cfg.with_task_defaults(cfg.make_task().defaults)
    run_id = registry.create_run(cfg.task, cfg.num_rounds, asdict(cfg))
    cfg = cfg.with_(fedge_run_id=run_id)
    registry.set_config(run_id, asdict(cfg))
    return submit_and_follow(state, registry, cfg, as_json, progress or ConsoleProgress())


def resume(state: Path, run_id: int, as_json: bool = False, progress: RunProgress | None = None) -> RunOutcome:
    state = Path(state).resolve()
    registry = open_registry(state)
    run = registry.run(run_id)
    if run["status"] == "completed":
        raise RunFailed(f"run {run_id} already completed all {run['num_rounds']} rounds")
    last = registry.last_round(run_id)
    cfg = RunConfig(**run["config"]).with_(fedge_run_id=run_id, start_round=last.round if last else 0)
    if cfg.start_round == cfg.num_rounds:
        registry.set_status(run_id, "completed")
        return RunOutcome(run_id, "completed")
    cli = FlowerCLI(state)
    progress = progress or ConsoleProgress()
    for fid in stop_stale_flower_runs(cli, run["flower_runs"]):
        progress.note(
            f"run {run_id}: stopped Flower run {fid}, left running by a coordinator that stopped without finishing it"
        )
    return submit_and_follow(state, registry, cfg, as_json, progress, cli)


def stop_stale_flower_runs(cli: FlowerCLI, flower_ids: list[int]) -> list[int]:
    """A SIGKILLed coordinator leaves its Flower run "running" in the SuperLink's database, with the round's
    instructions still queued: reconnecting SuperNodes would pull those first and wait on them (~40 s measured)
    until the SuperLink gives up on the dead ServerApp. Stopped, they are skipped at once. -> the ids stopped."""
    stale = [fid for fid in flower_ids if not cli.run_status(fid).startswith("finished")]
    for fid in stale:
        cli.stop(fid)
    return stale


def submit_and_follow(
    state: Path,
    registry: Registry,
    cfg: RunConfig,
    as_json: bool,
    progress: RunProgress,
    cli: FlowerCLI | None = None,
    simulation: str = "",
) -> RunOutcome:
    """Submit ``cfg`` (a run already in ``registry``) as a Flower run and follow it to its end. ``simulation``: the
    simulation runtime's federation config (``num-supernodes=N ...``) for a SuperLink started with --simulation,
    whose app then has the simulation ClientApp (fedge.server.simulation)."""
    cli = cli or FlowerCLI(state)
    app = write_app(state / "app", simulation=bool(simulation))
    overrides = write_overrides(state / "runs" / str(cfg.fedge_run_id) / f"config-from-{cfg.start_round}.toml", cfg)
    registry.set_status(cfg.fedge_run_id, "pending")
    flower_id = cli.run(app, overrides, simulation)
    registry.add_flower_run(cfg.fedge_run_id, flower_id)
    progress.started(cfg, flower_id, len(registry.rounds(cfg.fedge_run_id)))
    try:
        status = follow(registry, cli, cfg.fedge_run_id, flower_id, progress.round_done)
    finally:
        progress.ended(registry.run(cfg.fedge_run_id))
    if as_json:
        print(json.dumps(status_document(registry, cfg.fedge_run_id), indent=2))
    return RunOutcome(cfg.fedge_run_id, str(status["status"]), str(status.get("reason") or ""))


def follow(
    registry: Registry,
    cli: FlowerCLI,
    run_id: int,
    flower_id: int,
    on_round=lambda rec, completed: None,
    poll_s: float = 0.5,
    flower_check_s: float = 5.0,
) -> dict:
    """Wait for the run to end (the registry's status, or Flower's run ending without one) -> the run's row;
    ``on_round(record, rounds done)`` hears each round as it completes."""
    seen = {r.round for r in registry.rounds(run_id)}
    last_flower_check = time.monotonic()
    while True:
        run = registry.run(run_id)
        done = run["status"] in ("completed", "failed")
        for rec in registry.rounds(run_id):
            if rec.round not in seen and (rec.accuracy is not None or done):
                seen.add(rec.round)
                on_round(rec, len(seen))
        if done:
            return run
        if time.monotonic() - last_flower_check > flower_check_s:
            last_flower_check = time.monotonic()
            try:
                fstatus = cli.run_status(flower_id)
            except Exception as exc:  # coordinator unreachable
                registry.set_status(run_id, "failed", f"lost the coordinator: {exc}")
                return registry.run(run_id)
            if fstatus.startswith("finished"):
                time.sleep(1.0)  # the ServerApp writes its final status just before finishing
                run = registry.run(run_id)
                if run["status"] not in ("completed", "failed"):
                    registry.set_status(
                        run_id,
                        "failed",
                        f"Flower run {flower_id} ended as {fstatus!r} without"
                        " a fedge result (see the coordinator's log)",
                    )
                return registry.run(run_id)
        time.sleep(poll_s)


def status_document(registry: Registry, run_id: int) -> dict:
    run = registry.run(run_id)
    return {
        "run": run_id,
        "task": run["task"],
        "status": run["status"],
        "reason": run["reason"],
        "num_rounds": run["num_rounds"],
        "flower_runs": run["flower_runs"],
        "config": run["config"],
        "rounds": [r.to_json() for r in registry.rounds(run_id)],
    }


def print_status(registry: Registry, run_id: int, as_json: bool) -> None:
    doc = status_document(registry, run_id)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    console = _console()
    console.print(f"run {run_id}: {doc['task']}, {doc['status']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
    console.print(rounds_table(doc["rounds"]))
    for r in doc["rounds"]:
        for x in r.get("refused", []):
            what = "update rejected" if x.get("rejected") else "refused to train"
            console.print(f"round {r['round']}: {x['customer']} {what}: {x['reason']}", soft_wrap=True)


def rounds_table(rounds: list[dict]) -> Table:
    private = any(r.get("epsilon") is not None for r in rounds)
    refused = any(r.get("refused") for r in rounds)
    table = Table(
        "round",
        "accuracy",
        "loss",
        "clients",
        "wall s",
        "failures",
        *(["ε"] if private else []),
        *(["refused / rejected"] if refused else []),
        "checkpoint sha256",
    )
    for r in rounds:
        clients = ", ".join(r["clients"]) if len(r["clients"]) <= 5 else f"{len(r['clients'])} customers"
        extra = [_fmt(r.get("epsilon"))] if private else []
        if refused:
            extra.append("; ".join(f"{x['customer']}: {x['reason']}" for x in r.get("refused", [])) or "-")
        table.add_row(
            str(r["round"]),
            _fmt(r["accuracy"]),
            _fmt(r["loss"]),
            clients,
            f"{r['wall_s']:.1f}",
            str(len(r["failures"])),
            *extra,
            r["checkpoint_sha256"][:16],
        )
    return table


def privacy_document(registry: Registry, run_id: int) -> dict:
    """What the run spent: per round, the central mechanism's ε and each customer's DP-SGD ε."""
    run = registry.run(run_id)
    cfg = run["config"]
    rounds = registry.rounds(run_id)
    last = rounds[-1].privacy if rounds else {}
    return {
        "run": run_id,
        "status": run["status"],
        "delta": cfg.get("dp_delta"),
        "accountant": last.get("accountant"),
        "central": {
            "on": cfg.get("dp_noise", 0) > 0,
            "noise_multiplier": cfg.get("dp_noise"),
            "clip": cfg.get("dp_clip"),
            "adaptive": bool(cfg.get("dp_adaptive")),
            "target_quantile": cfg.get("dp_target_quantile"),
            **({k: v for k, v in last.get("central", {}).items() if k in ("sample_rate", "steps", "epsilon")}),
        },
        "dp_sgd": {
            "on": bool(cfg.get("dp_sgd")),
            "noise_multiplier": cfg.get("dp_sgd_noise") or None,
            "target_epsilon": cfg.get("dp_sgd_epsilon") or None,
            "clip": cfg.get("dp_sgd_clip"),
            "per_customer": (last.get("dp_sgd") or {}).get("per_customer", {}),
        },
        "secagg": cfg.get("secagg"),
        "epsilon": last.get("epsilon"),
        "rounds": [
            {
                "round": r.round,
                "epsilon": r.privacy.get("epsilon"),
                "customers": r.privacy.get("customers", {}),
                "clip": r.privacy.get("central", {}).get("clip"),
                "refused": r.refused,
            }
            for r in rounds
        ],
    }


def print_privacy(registry: Registry, run_id: int, as_json: bool) -> None:
    doc = privacy_document(registry, run_id)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    console = _console()
    c, d = doc["central"], doc["dp_sgd"]
    console.print(
        f"run {run_id} ({doc['status']}): ε = [bold]{_fmt(doc['epsilon'])}[/bold] at δ = {doc['delta']}"
        f"; accountant: {doc['accountant'] or '-'}; SecAgg+ {'on' if doc['secagg'] else 'off'}"
    )
    if c["on"]:
        clip = (
            f"adaptive (from {c['clip']}, tracking the {c['target_quantile']} quantile of update norms)"
            if c["adaptive"]
            else f"C = {c['clip']}"
        )
        console.print(
            f"central DP: client-side clipping {clip}, Gaussian noise σ = {c['noise_multiplier']} on"
            f" the aggregate, sampling rate {c.get('sample_rate', '-')}, steps {c.get('steps', '-')},"
            f" ε {_fmt(c.get('epsilon'))}"
        )
    if d["on"]:
        console.print(
            f"DP-SGD (Opacus, per-sample clip {d['clip']}, σ {d['noise_multiplier'] or 'from target ε'}"
            f" {'(target ε ' + str(d['target_epsilon']) + ')' if d['target_epsilon'] else ''}):"
        )
        for name, p in sorted(d["per_customer"].items()):
            console.print(f"  {name}: ε {p['epsilon']:.4f} (σ {p['noise']:.3f}, δ {p['delta']})")
    if not c["on"] and not d["on"]:
        console.print("no differential privacy in this run (ε unbounded)")
    table = Table("round", "ε", "clip", "per customer", "refused")
    for r in doc["rounds"]:
        table.add_row(
            str(r["round"]),
            _fmt(r["epsilon"]),
            _fmt(r["clip"]),
            ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["customers"].items())) or "-",
            "; ".join(f"{x['customer']}: {x['reason']}" for x in r["refused"]) or "-",
        )
    console.print(table)


def _console() -> Console:
    """Rich console; off a terminal (pipes, logs, tests) wide enough that tables do not fold every cell."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def print_list(registry: Registry, as_json: bool) -> None:
    runs = registry.runs()
    if as_json:
        print(
            json.dumps(
                [
                    {k: r[k] for k in ("id", "task", "status", "num_rounds", "reason")}
                    | {"completed_rounds": len(registry.rounds(r["id"]))}
                    for r in runs
                ],
                indent=2,
            )
        )
        return
    table = Table("run", "task", "status", "rounds", "last accuracy", "reason")
    for r in runs:
        rounds = registry.rounds(r["id"])
        table.add_row(
            str(r["id"]),
            r["task"],
            r["status"],
            f"{len(rounds)}/{r['num_rounds']}",
            _fmt(rounds[-1].accuracy if rounds else None),
            (r["reason"] or "")[:60],
        )
    Console().print(table)


def plot(registry: Registry, run_id: int, out: Path, baseline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = registry.rounds(run_id)
    if not rounds:
        raise RunFailed(f"run {run_id} has no completed rounds to plot")
    xs = [r.round for r in rounds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(xs, [r.accuracy for r in rounds], marker="o", label="federated (union of holdouts)")
    names = sorted({n for r in rounds for n in r.client_metrics})
    for n in names:
        ax1.plot(xs, [r.client_metrics.get(n, {}).get("eval_accuracy") for r in rounds], alpha=0.4, ls="--", label=n)
    if baseline is not None:
        ax1.axhline(baseline, color="k", ls=":", label="centralized")
    ax1.set(xlabel="round", ylabel="accuracy", title=f"run {run_id}: accuracy")
    ax1.legend(fontsize=7)
    ax2.plot(xs, [r.loss for r in rounds], marker="o", color="tab:red")
    ax2.set(xlabel="round", ylabel="loss", title="holdout loss")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
