"""Local training and evaluation (torch), shared by the ClientApp, the coordinator's baseline and simulation.

Model weights travel as a list of numpy arrays in ``state_dict`` order, restricted to the *exchanged* names:
everything except the parameters frozen by ``--freeze`` patterns (which stay at their initial values).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from fedge.core.tasks.data import Dataset
from fedge.edge_runtime.common.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    proximal_mu: float = 0.0  # FedProx: + mu/2 ||w - w_start||^2 on the loss (w_start: the global model)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.proximal_mu < 0:
            raise ConfigError(f"invalid training config {self}")


def frozen(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def exchanged_names(model: nn.Module, freeze: tuple[str, ...] = ()) -> list[str]:
    """state_dict keys that travel between coordinator and clients, in a stable order."""
    return [k for k in model.state_dict() if not frozen(k, freeze)]


def trainable_parameters(model: nn.Module, freeze: tuple[str, ...] = ()) -> list[nn.Parameter]:
    """Marks what trains: the parameters among the exchanged names (a model whose state_dict leaves out a frozen
    base, like the text task's, keeps that base frozen) -> those parameters."""
    exchanged = set(exchanged_names(model, freeze))
    for name, p in model.named_parameters():
        p.requires_grad_(name in exchanged)
    return [p for p in model.parameters() if p.requires_grad]


def get_arrays(model: nn.Module, names: list[str]) -> list[np.ndarray]:
    sd = model.state_dict()
    return [sd[k].detach().cpu().numpy().copy() for k in names]


def set_arrays(model: nn.Module, names: list[str], arrays: list[np.ndarray]) -> None:
    sd = model.state_dict()
    if len(arrays) != len(names):
        raise ValueError(f"got {len(arrays)} arrays for {len(names)} exchanged parameters")
    for k, a in zip(names, arrays):
        if tuple(sd[k].shape) != tuple(a.shape):
            raise ValueError(f"parameter {k}: got shape {tuple(a.shape)}, model has {tuple(sd[k].shape)}")
        sd[k] = torch.as_tensor(np.asarray(a), dtype=sd[k].dtype)
    model.load_state_dict(sd)


def _batches(ds: Dataset, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(ds)) if rng is not None else np.arange(len(ds))
    for i in range(0, len(ds), batch_size):
        idx = order[i : i + batch_size]
        yield torch.from_numpy(ds.x[idx]), torch.from_numpy(ds.y[idx])


def train(
    model: nn.Module, ds: Dataset, cfg: TrainConfig, freeze: tuple[str, ...] = (), masks: dict | None = None
) -> float:
    """Train in place; returns the mean training loss of the last epoch. ``masks`` (name -> 0/1 tensor) hold
    pruned weights at zero (used by the export's recovery rounds)."""
    torch.manual_seed(cfg.seed)
    params = trainable_parameters(model, freeze)
    if not params or cfg.epochs == 0 or len(ds) == 0:
        return float("nan")
    opt = torch.optim.Adam(params, lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(cfg.seed)
    start = [p.detach().clone() for p in params] if cfg.proximal_mu > 0 else []
    model.train()
    last = float("nan")
    for _ in range(cfg.epochs):
        total, count = 0.0, 0
        for xb, yb in _batches(ds, cfg.batch_size, rng):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            if start:  # FedProx (Li et al. 2020): stay near the model the round started from
                (loss + cfg.proximal_mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(params, start))).backward()
            else:
                loss.backward()
            opt.step()
            if masks:
                _apply_masks(model, masks)
            total, count = total + loss.item() * len(yb), count + len(yb)
        last = total / max(count, 1)
    return last


def _apply_masks(model: nn.Module, masks: dict) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, ...) inputs -> (N, C) float32 logits."""
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset) -> tuple[float, float]:
    """-> (mean cross-entropy loss, accuracy)."""
    if len(ds) == 0:
        return float("nan"), float("nan")
    logits = torch.from_numpy(predict(model, ds.x))
    y = torch.from_numpy(ds.y)
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, float((logits.argmax(1) == y).float().mean().item())


@dataclass(frozen=True)
class DPSGDResult:
    loss: float
    noise_multiplier: float
    sample_rate: float
    steps: int


def dpsgd_plan(n: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(Poisson sampling rate, optimizer steps) a DP-SGD round takes on ``n`` examples: Opacus' Poisson loader
    draws as many batches per epoch as the plain loader it replaces, ceil(n / batch_size)."""
    q = min(1.0, batch_size / max(n, 1))
    return q, epochs * max(1, -(-n // batch_size))


def train_dpsgd(
    model: nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    noise_multiplier: float,
    max_grad_norm: float,
    freeze: tuple[str, ...] = (),
    masks: dict | None = None,
) -> DPSGDResult:
    """Sample-level DP-SGD with Opacus: Poisson-sampled batches, per-sample gradients clipped to
    ``max_grad_norm``, Gaussian noise of ``noise_multiplier * max_grad_norm``. Trains ``model`` in place."""
    import secrets
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(cfg.seed)
    params = trainable_parameters(model, freeze)
    if cfg.proximal_mu > 0:
        raise ConfigError("DP-SGD trains on the data loss alone: a FedProx proximal term would be dropped")
    q, _steps = dpsgd_plan(len(ds), cfg.batch_size, cfg.epochs)
    if not params or cfg.epochs == 0 or len(ds) == 0:
        return DPSGDResult(float("nan"), noise_multiplier, q, 0)
    # The noise and the Poisson sampling must be secret: seeded from cfg.seed (which the coordinator sends) they
    # could be regenerated by the coordinator and would repeat across customers, so that the difference of two
    # customers' updates cancels the noise. Both generators are seeded from the OS's CSPRNG instead. (Opacus'
    # secure_mode, which also guards against floating-point attacks on the sampler, needs torchcsprng, which is
    # not available for this PyTorch; fedge does not claim that protection.)
    sampling, noise = (torch.Generator().manual_seed(secrets.randbits(63)) for _ in range(2))
    loader = DataLoader(
        TensorDataset(torch.from_numpy(ds.x), torch.from_numpy(ds.y)), batch_size=cfg.batch_size, generator=sampling
    )
    opt = torch.optim.Adam(params, lr=cfg.lr)
    model.train()  # Opacus refuses a module in eval mode (the client evaluated the incoming model first)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)  # its own ε is never read: fedge.core.privacy accounts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus' notes on secure RNG and on full backward hooks
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise,
        )
    loss_fn = nn.CrossEntropyLoss()
    dp_model.train()
    last, taken = float("nan"), 0
    for _ in range(cfg.epochs):
        total, count = 0.0, 0
        for xb, yb in dp_loader:
            dp_opt.zero_grad()
            if len(yb):  # Poisson sampling may draw an empty batch: still a (noise-only) step
                loss = loss_fn(dp_model(xb), yb)
                loss.backward()
                total, count = total + loss.item() * len(yb), count + len(yb)
            dp_opt.step()
            taken += 1
            if masks:  # recovery after pruning: zeros stay zeros
                _apply_masks(model, masks)
        last = total / max(count, 1)
    dp_model.remove_hooks() if hasattr(dp_model, "remove_hooks") else None
    return DPSGDResult(last, noise_multiplier, q, taken)
