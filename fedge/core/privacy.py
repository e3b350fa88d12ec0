"""Privacy accounting with maintained accountants (Opacus' PRV and RDP accountants): never a hand-written formula.

Two mechanisms are accounted:

* ``dp-sgd``: sample-level DP-SGD a customer runs itself with Opacus; its history is a list of
  (noise multiplier, sampling rate, steps) segments, one per round it trained;
* ``central``: client-side clipping plus Gaussian noise on the aggregate (customer-level DP), one step per
  round with sampling rate = sampled / connected customers.

ε is the tighter of two valid upper bounds: the PRV accountant's (Gopi et al. 2021; Opacus reports its upper
bound, numerical error included) and the RDP accountant's. Noise for a target ε is calibrated with PRV, which
asks about 5% less noise than RDP for the same guarantee at fedge's DP-SGD settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError

ACCOUNTANT = "prv"  # what calibrates noise for a target ε
NOISE_CACHE = "dp-noise-cache.json"  # in a customer's state dir: noise multipliers already calibrated
PRV_MAX_EPSILON = 100.0  # past this (RDP bound) PRV's grid gets slow and no budget is that large: RDP only


def update_norm(new, old) -> float:
    """L2 norm of a model update (new - old) over all its tensors: what clipping bounds and screening checks."""
    import numpy as np

    return float(np.sqrt(sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2)) for a, b in zip(new, old))))


def accountant_name() -> str:
    return f"opacus {metadata.version('opacus')} PRVAccountant (RDPAccountant where tighter)"


def merged(history: Sequence[Sequence[float]]) -> list[tuple[float, float, int]]:
    """Segments with the same (sigma, sample rate) as one: composition does not depend on order, and PRV's cost
    grows with the number of segments (one per round otherwise)."""
    steps: dict[tuple[float, float], int] = {}
    for sigma, q, n in history:
        key = (float(sigma), float(q))
        steps[key] = steps.get(key, 0) + int(n)
    return [(sigma, q, n) for (sigma, q), n in steps.items()]


def epsilon(history: Sequence[Sequence[float]], delta: float) -> float:
    """ε at ``delta`` after the Gaussian-mechanism segments in ``history`` (sigma, sample rate, steps)."""
    import warnings

    from opacus.accountants import PRVAccountant, RDPAccountant

    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in history):
        return float("inf")
    segments = merged(history)
    rdp = RDPAccountant()
    rdp.history = list(segments)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound is valid, only looser
        warnings.simplefilter("ignore", UserWarning)
        bound = float(rdp.get_epsilon(delta=delta))
    if bound > PRV_MAX_EPSILON:
        return bound
    prv = PRVAccountant()
    prv.history = list(segments)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) on its grid's empty tail at sampling rate 1
        try:
            return min(bound, float(prv.get_epsilon(delta=delta)))
        except (ValueError, OverflowError, FloatingPointError):
            return bound


def noise_for_epsilon(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, cache: Path | None = None
) -> float:
    """The noise multiplier that spends ``target_epsilon`` over ``steps`` steps at ``sample_rate``.

    The search runs the accountant a few dozen times (about 2.4 s on a small CPU), and Flower starts a fresh
    process for every round's message, so a customer would repeat it every round: with ``cache`` (a JSON file in
    its state dir) the answer is kept per (accountant, Opacus version, ε, δ, rate, steps). An unreadable cache is
    ignored and rewritten."""
    import json
    import os
    import warnings

    key = f"{ACCOUNTANT}|opacus {metadata.version('opacus')}|{target_epsilon!r}|{delta!r}|{sample_rate!r}|{steps}"
    known: dict = {}
    if cache is not None and cache.exists():
        try:
            known = json.loads(cache.read_text())
            if isinstance(known.get(key), float):
                return known[key]
        except (ValueError, OSError, AttributeError):
            known = {}
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
            )
        )
    if cache is not None:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps({**known, key: sigma}, indent=1, sort_keys=True))
            os.replace(tmp, cache)
        except OSError:  # a cache, not state: the next round computes it again
            pass
    return sigma


@dataclass(frozen=True)
class DPSGDConfig:
    """What a run asks of each customer's local training (fit config keys ``dp-sgd-*``)."""

    noise: float = 0.0  # noise multiplier; 0 with epsilon > 0: derive it from the budget
    clip: float = 1.0  # per-sample gradient L2 bound
    epsilon: float = 0.0  # target ε for the whole planned run (alternative to noise)
    delta: float = 1e-5

    def noise_multiplier(
        self, sample_rate: float, steps_per_round: int, planned_rounds: int, cache: Path | None = None
    ) -> float:
        if self.noise > 0:
            return self.noise
        if self.epsilon <= 0:
            raise ConfigError("DP-SGD needs --dp-sgd-noise or --dp-sgd-epsilon")
        return noise_for_epsilon(self.epsilon, self.delta, sample_rate, steps_per_round * planned_rounds, cache)
