"""The run's privacy settings as the customers receive them, and the ε the registry records after every round
(``fedge run status --json`` rounds carry ``epsilon``; ``fedge run privacy RUN`` prints the report)."""

from __future__ import annotations

import hashlib

from fedge.core.privacy import accountant_name, epsilon
from fedge.core.wire import FitKey
from fedge.server.run_config import RunConfig


def run_key(cfg: RunConfig) -> str:
    """How a customer's ledger names this run: the coordinator (its state dir) and the fedge run id."""
    return f"{hashlib.sha256(cfg.state_dir.encode()).hexdigest()[:10]}/run-{cfg.fedge_run_id}"


def privacy_fit_config(cfg: RunConfig) -> dict:
    return {
        FitKey.RUN: run_key(cfg),
        FitKey.PLANNED_ROUNDS: cfg.num_rounds,
        FitKey.DP_NOISE: cfg.dp_noise,
        FitKey.DP_CLIP: cfg.dp_clip,
        FitKey.DP_SGD: cfg.dp_sgd,
        FitKey.DP_SGD_NOISE: cfg.dp_sgd_noise,
        FitKey.DP_SGD_CLIP: cfg.dp_sgd_clip,
        FitKey.DP_SGD_EPSILON: cfg.dp_sgd_epsilon,
    }


def central_epsilon(cfg: RunConfig, rounds: int) -> float | None:
    """Customer-level ε of the central mechanism after ``rounds`` rounds (every connected customer sampled)."""
    if cfg.dp_noise <= 0:
        return None
    return epsilon([(cfg.dp_noise, 1.0, rounds)], cfg.dp_delta)


def round_privacy(cfg: RunConfig, rnd: int, outcome) -> dict:
    if cfg.dp_noise <= 0 and not cfg.dp_sgd:
        return {}
    customers = {name: p["epsilon"] for name, p in outcome.privacy.items()}
    central = central_epsilon(cfg, rnd)
    doc = {"delta": cfg.dp_delta, "accountant": accountant_name(), "customers": customers}
    if central is not None:
        used = outcome.central_dp
        doc["central"] = {
            "mechanism": "client-side clipping + Gaussian noise on the aggregate"
            + (" (adaptive clipping)" if cfg.dp_adaptive else ""),
            "noise_multiplier": cfg.dp_noise,
            "clip": used.get("clip", cfg.dp_clip),
            "sample_rate": 1.0,
            "steps": rnd,
            "epsilon": central,
            **{k: used[k] for k in ("stdev", "survivors", "next_clip") if k in used},
        }
    if cfg.dp_sgd:
        doc["dp_sgd"] = {
            "noise_multiplier": cfg.dp_sgd_noise or None,
            "target_epsilon": cfg.dp_sgd_epsilon or None,
            "clip": cfg.dp_sgd_clip,
            "per_customer": outcome.privacy,
        }
    # the run's headline ε: the central mechanism's if on, else the worst customer's DP-SGD ε
    doc["epsilon"] = central if central is not None else (max(customers.values()) if customers else None)
    return doc
