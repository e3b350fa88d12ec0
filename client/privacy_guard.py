"""Before a customer trains a round: what will the round cost in ε, and does it fit the customer's own limit?

The cost is computed here, on the customer's side, with the maintained accountant:

* DP-SGD on (``dp-sgd``): the customer adds the noise itself, so the sample-level ε of its own training is what
  the ledger charges, whatever the coordinator does;
* otherwise central DP (``dp-noise`` > 0): the customer-level ε of the declared central mechanism;
* otherwise the round is not differentially private: a customer with a limit refuses it.

Within one run ε composes through the accountants (fedge.core.privacy: PRV or RDP, the tighter); across runs the ledger
adds them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedge.client.ledger import Budget, Ledger
from fedge.core.privacy import NOISE_CACHE, DPSGDConfig, epsilon
from fedge.core.wire import FitKey


@dataclass(frozen=True)
class RoundCost:
    run: str
    round: int
    mechanism: str  # "dp-sgd" | "central" | "none"
    epsilon_run: float | None  # ε of the run after this round, at the customer's δ (None: not private)
    delta: float
    history: list = field(default_factory=list)  # Gaussian segments (sigma, sample rate, steps) of the run
    noise: float = 0.0
    clip: float = 0.0

    def with_last_segment(self, segment: list) -> RoundCost:
        from dataclasses import replace

        history = [*self.history[:-1], segment]
        return replace(self, history=history, epsilon_run=epsilon(history, self.delta))

    def ledger_body(self) -> dict:
        return {
            "run": self.run,
            "round": self.round,
            "mechanism": self.mechanism,
            "epsilon_run": self.epsilon_run,
            "delta": self.delta,
            "history": self.history,
            "noise": self.noise,
            "clip": self.clip,
        }


def dpsgd_config(config: dict, delta: float) -> DPSGDConfig | None:
    if not config.get(FitKey.DP_SGD, False):
        return None
    return DPSGDConfig(
        noise=float(config.get(FitKey.DP_SGD_NOISE, 0.0)),
        clip=float(config.get(FitKey.DP_SGD_CLIP, 1.0)),
        epsilon=float(config.get(FitKey.DP_SGD_EPSILON, 0.0)),
        delta=delta,
    )


def plan_round(
    config: dict, ledger: Ledger | None, delta: float, n_train: int, batch_size: int, epochs: int
) -> RoundCost:
    from fedge.core.tasks.training import dpsgd_plan

    run, rnd = str(config.get(FitKey.RUN, "unknown")), int(config.get(FitKey.ROUND, 0))
    before = ledger.runs().get(run, {}) if ledger is not None else {}
    # simulation has no state dir and no ledger: count every earlier round as taken part in (an upper bound)
    earlier = max(rnd - 1, 0) if ledger is None else None
    dp = dpsgd_config(config, delta)
    if dp is not None:
        q, steps = dpsgd_plan(n_train, batch_size, epochs)
        sigma = dp.noise_multiplier(
            q,
            steps,
            int(config.get(FitKey.PLANNED_ROUNDS, 1)),
            cache=ledger.dir / NOISE_CACHE if ledger is not None else None,
        )
        if earlier is not None:
            history = [[sigma, q, steps * (earlier + 1)]]
        elif before.get("mechanism") == "dp-sgd":
            history = [*before.get("history", []), [sigma, q, steps]]
        else:
            history = [[sigma, q, steps]]
        return RoundCost(run, rnd, "dp-sgd", epsilon(history, delta), delta, history, sigma, dp.clip)
    central = float(config.get(FitKey.DP_NOISE, 0.0))
    if central > 0:
        # one Gaussian release per round, every connected customer sampled (rate 1)
        if earlier is not None:
            done = earlier
        else:
            done = len(before.get("rounds", [])) if before.get("mechanism") == "central" else 0
        history = [[central, 1.0, done + 1]]
        return RoundCost(
            run,
            rnd,
            "central",
            epsilon(history, delta),
            delta,
            history,
            central,
            float(config.get(FitKey.DP_CLIP, 0.0)),
        )
    return RoundCost(run, rnd, "none", None, delta)


def refusal(cost: RoundCost, ledger: Ledger | None, budget: Budget | None) -> str | None:
    """Why this round must not be trained, or None if it fits."""
    if budget is None or ledger is None:
        return None
    if cost.epsilon_run is None:
        return (
            f"round {cost.round} is not differentially private and this customer's limit is"
            f" ε <= {budget.max_epsilon:g} (δ = {budget.delta:g})"
        )
    runs = ledger.runs()
    spent = sum(r["epsilon"] for r in runs.values())
    spent_elsewhere = spent - runs.get(cost.run, {}).get("epsilon", 0.0)
    projected = spent_elsewhere + cost.epsilon_run
    if projected > budget.max_epsilon:
        return (
            f"round {cost.round} would bring this customer's ε to {projected:.3f} > limit {budget.max_epsilon:g}"
            f" (spent {spent:.3f}, δ = {budget.delta:g}, {cost.mechanism})"
        )
    return None
