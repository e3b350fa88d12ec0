"""The coordinator's whole story for one fedge run, executed inside Flower's ServerApp process:

load the starting model (fresh, --init checkpoint, or the last completed round when resuming)
for each remaining round: fit (plain or SecAgg+) -> evaluate on the customers' holdouts
                          -> checkpoint (safetensors + sha256) -> registry row
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid

from fedge.core.tasks import parse_labels
from fedge.core.wire import Failure, FailureKind, FitKey
from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.server.central_dp import AdaptiveCentralDP, CentralDP
from fedge.server.checkpoint import load_checkpoint, save_checkpoint
from fedge.server.exchange import evaluate_exchange, fit_exchange
from fedge.server.fast_grid import FastPollGrid
from fedge.server.from_release import extend_head
from fedge.server.privacy import privacy_fit_config, round_privacy
from fedge.server.registry import Registry, RoundRecord, registry_path
from fedge.server.run_config import RunConfig
from fedge.server.strategy import FedgeFedAvg, InsufficientClients, RoundOutcome

log = logging.getLogger("fedge.coordinator")


class RoundFailed(FedgeUserError, RuntimeError):
    pass


def checkpoint_path(state_dir: Path, run_id: int, rnd: int) -> Path:
    return Path(state_dir) / "runs" / str(run_id) / f"round-{rnd:04d}.safetensors"


def secagg_workflow(cfg: RunConfig) -> SecAggPlusWorkflow:
    """Shares go to every sampled client (num_shares=1.0); the threshold is 2/3 of them (at least 2), so
    with 3 customers one may drop after key sharing and the round still completes."""
    return SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=0.67,
        max_weight=cfg.secagg_max_weight,
        clipping_range=cfg.secagg_clipping_range,
        timeout=cfg.round_timeout,
    )


def starting_state(cfg: RunConfig, registry: Registry) -> dict[str, np.ndarray]:
    """The full model state (in the task model's state_dict order) the run starts from."""
    import torch

    torch.manual_seed(cfg.seed)
    model = cfg.make_task().build_model()
    fresh = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if cfg.start_round > 0:
        last = registry.last_round(cfg.fedge_run_id)
        if last is None or last.round != cfg.start_round:
            raise RoundFailed(
                f"cannot resume from round {cfg.start_round}: registry's last round is {last and last.round}"
            )
        path = Path(last.checkpoint)
    elif cfg.init:
        path = Path(cfg.init)
    else:
        return fresh
    loaded, _ = load_checkpoint(path)
    if cfg.init_labels and cfg.start_round == 0:  # a run from a release whose catalogue it extends
        old, new = len(parse_labels(cfg.init_labels)), cfg.make_task().num_classes
        loaded = extend_head(loaded, fresh, old, new) if set(loaded) == set(fresh) else loaded
    if set(loaded) != set(fresh):
        raise RoundFailed(
            f"checkpoint {path} does not fit task {cfg.task!r}: missing {sorted(set(fresh) - set(loaded))},"
            f" unexpected {sorted(set(loaded) - set(fresh))}"
        )
    for k, v in fresh.items():
        if loaded[k].shape != v.shape:
            raise RoundFailed(f"checkpoint {path}: {k} has shape {loaded[k].shape}, task model has {v.shape}")
    return {k: loaded[k] for k in fresh}  # safetensors stores keys sorted; keep the model's order


def run_federation(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_flower(dict(context.run_config))
    state_dir = Path(cfg.state_dir)
    _log_to(state_dir / "logs" / f"run-{cfg.fedge_run_id}.log")
    registry = Registry(registry_path(state_dir))
    try:
        _run(cast(Grid, FastPollGrid(grid)), context, cfg, registry)  # a Grid by delegation
    except Exception as exc:
        registry.set_status(cfg.fedge_run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    registry.set_status(cfg.fedge_run_id, "completed")


def _run(grid: Grid, context: Context, cfg: RunConfig, registry: Registry) -> None:
    from fedge.core.tasks.training import frozen

    registry.set_status(cfg.fedge_run_id, "running")
    task = cfg.make_task()
    state = starting_state(cfg, registry)
    all_names = list(state)
    trained = [k for k in all_names if not frozen(k, cfg.freeze_patterns)]
    if not trained:
        raise RoundFailed(f"--freeze {cfg.freeze!r} freezes every parameter; nothing to train")
    local = cfg.with_task_defaults(task.defaults)  # runs recorded before launch resolved them may still hold -1
    fit_config = {
        FitKey.TASK: cfg.task,
        FitKey.FREEZE: cfg.freeze,
        FitKey.SEED: cfg.seed,
        FitKey.HOLD_SPARSITY: cfg.hold_sparsity,
        FitKey.LOCAL_EPOCHS: local.local_epochs,
        FitKey.BATCH_SIZE: local.batch_size,
        FitKey.LR: local.lr,
        FitKey.PROXIMAL_MU: local.proximal_mu,
        **cfg.task_settings(),
        **privacy_fit_config(cfg),
    }
    strategy = FedgeFedAvg(
        min_clients=cfg.min_clients,
        wait_timeout=cfg.wait_clients_timeout,
        initial_parameters=ndarrays_to_parameters([state[k] for k in all_names]),
        fit_config=fit_config,
        aggregator=cfg.aggregator,
        max_update_norm=cfg.max_update_norm,
    )
    outer: Strategy = strategy
    if cfg.dp_noise > 0 and cfg.dp_adaptive:
        outer = AdaptiveCentralDP(
            strategy,
            cfg.dp_noise,
            cfg.dp_clip,
            num_sampled_clients=cfg.min_clients,
            target_quantile=cfg.dp_target_quantile,
        )
    elif cfg.dp_noise > 0:
        outer = CentralDP(strategy, cfg.dp_noise, cfg.dp_clip, num_sampled_clients=cfg.min_clients)
    ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.num_rounds), strategy=outer)
    fit = secagg_workflow(cfg) if cfg.secagg else fit_exchange(cfg.round_timeout)
    evaluate = evaluate_exchange(cfg.round_timeout)

    thread, stop, ready = start_update_client_manager_thread(grid, ctx.client_manager)
    ready.wait()
    try:
        ctx.state.config_records[MAIN_CONFIGS_RECORD] = cfg_record = _config_record()
        for rnd in range(cfg.start_round + 1, cfg.num_rounds + 1):
            started = time.monotonic()
            cfg_record[Key.CURRENT_ROUND] = rnd
            outcome = _fit_round(ctx, grid, fit, strategy, state, all_names, trained, rnd, cfg.max_round_attempts)
            update = parameters_to_ndarrays(
                compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
            )
            if len(update) != len(trained):
                raise RoundFailed(f"round {rnd}: aggregate has {len(update)} arrays, expected {len(trained)}")
            state.update({k: v.astype(state[k].dtype, copy=False) for k, v in zip(trained, update)})
            if outcome.prev_eval is not None and rnd > 1:
                e = outcome.prev_eval
                registry.set_round_eval(cfg.fedge_run_id, rnd - 1, e.accuracy, e.loss, e.per_client)
            _record(registry, cfg, rnd, state, outcome, time.monotonic() - started, round_privacy(cfg, rnd, outcome))
            log.info("round %d: %.2fs, clients %s", rnd, time.monotonic() - started, outcome.clients)
        _set_params(ctx, state, all_names)
        evaluate(grid, ctx)  # the final global model
        if strategy.final_eval is not None:
            e = strategy.final_eval
            registry.set_round_eval(cfg.fedge_run_id, cfg.num_rounds, e.accuracy, e.loss, e.per_client)
    finally:
        stop.set()
        thread.join(timeout=10)


def _log_to(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("fedge", "flwr"):
        logging.getLogger(name).addHandler(handler)
    log.setLevel(logging.INFO)


def _config_record():
    from flwr.app import ConfigRecord

    return ConfigRecord({Key.START_TIME: time.time(), Key.CURRENT_ROUND: 0})


def _set_params(ctx: LegacyContext, state: dict, names: list[str]) -> None:
    params = ndarrays_to_parameters([state[k] for k in names])
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, keep_input=True)


def _fit_round(ctx, grid, fit, strategy: FedgeFedAvg, state, names, trained, rnd: int, attempts: int) -> RoundOutcome:
    """Fit with retries: a SecAgg+ round halts (no aggregate) when a client drops before key sharing ends, and a
    round falls short of --min-clients when clients fail (no reply in time, node unavailable: as just after a
    coordinator restart, while SuperNodes reconnect). Both are tried again. A shortfall of refusals or rejected
    updates alone is final: another attempt would not change a customer's decision or its update."""
    earlier: list[Failure] = []
    sampled_before: list[int] = []  # nodes asked in attempts that failed
    for attempt in range(1, attempts + 1):
        _set_params(ctx, state, names)  # clients receive the full model, send back the trained part
        outcome = strategy.begin_round(rnd, [state[k] for k in trained])
        errors_before = len(getattr(grid, "errors", []))
        try:
            fit(grid, ctx)
        except InsufficientClients as exc:
            outcome.failures += _new_errors(grid, errors_before, outcome.failures)
            if not outcome.failures or attempt == attempts:
                raise InsufficientClients(
                    f"{exc}" + (f"; earlier attempts: {_texts(earlier)}" if earlier else "")
                ) from exc
            earlier += outcome.failures + [Failure(FailureKind.ROUND, None, f"attempt {attempt}: {exc}")]
            sampled_before += outcome.sampled
            log.warning("round %d attempt %d: too few updates after failures; retrying", rnd, attempt)
            continue
        outcome.failures += _new_errors(grid, errors_before, outcome.failures)
        if outcome.aggregated:
            # a node asked in an attempt that failed and gone by this one sent no update this round: said unless
            # this attempt's own failures name it (an earlier attempt's error is about that attempt)
            gone = [n for n in dict.fromkeys(sampled_before) if n not in outcome.sampled]
            outcome.failures += strategy.dropouts(gone)
            outcome.failures = earlier + outcome.failures
            return outcome
        sampled_before += outcome.sampled
        earlier += outcome.failures + [
            Failure(FailureKind.ROUND, None, f"attempt {attempt}: round halted without an aggregate")
        ]
        log.warning("round %d attempt %d produced no aggregate; retrying", rnd, attempt)
    raise InsufficientClients(f"round {rnd}: no aggregate after {attempts} attempts; failures: {_texts(earlier)}")


def _texts(failures: list[Failure]) -> list[str]:
    return [str(f) for f in failures]


def _new_errors(grid, since: int, known: list[Failure]) -> list[Failure]:
    """The error replies the grid received since ``since`` that the strategy did not see (SecAgg+ drops them)."""
    return [e for e in getattr(grid, "errors", [])[since:] if not any(e.same_as(k) for k in known)]


def _record(
    registry: Registry, cfg: RunConfig, rnd: int, state: dict, outcome: RoundOutcome, wall: float, privacy: dict
) -> None:
    path = checkpoint_path(Path(cfg.state_dir), cfg.fedge_run_id, rnd)
    sha = save_checkpoint(path, state, {"task": cfg.task, "run": str(cfg.fedge_run_id), "round": str(rnd)})
    registry.add_round(
        cfg.fedge_run_id,
        RoundRecord(
            round=rnd,
            accuracy=None,
            loss=None,
            clients=outcome.clients,
            client_metrics=outcome.client_metrics,
            failures=_texts(outcome.failures),
            wall_s=round(wall, 3),
            checkpoint=str(path),
            checkpoint_sha256=sha,
            privacy=privacy,
            refused=outcome.refused + [{**r, "rejected": True} for r in outcome.rejected],
        ),
    )
