"""Central DP that works with SecAgg+: Flower's client-side clipping wrappers (customers clip their updates,
client/clipping.py; the coordinator adds Gaussian noise to the aggregate), fixed or adaptive, subclassed to fix
the traps measured on Flower 1.41:

* the legacy wrappers return no aggregate at all when any client failed, silently discarding the whole round:
  here the survivors' aggregate is noised and kept (the failures are recorded in the round);
* their noise is calibrated to the number of clients *sampled*; the aggregate is an average over the clients
  whose updates were actually aggregated, so the standard deviation sigma * C / n uses n = survivors;
* the adaptive wrapper updates the clipping norm *before* noising, so a round's noise followed next round's
  bound rather than the one the customers clipped to: here the noise uses the norm sent this round, and the
  norm is updated afterwards from the survivors' (noised) count of unclipped updates;
* the adaptive wrapper's default count noise (expected clients / 20) rejects any useful noise multiplier in a
  federation of a few customers: fedge uses max(clients / 20, sigma), as large as the update noise, which
  costs sigma -> sigma / sqrt(3/4) on the update (Andrew et al. 2021, the split Flower implements).

Updates are averaged with equal weights under DP (clients report weight 1), so each customer's influence on the
average is bounded by C / n, which is what the noise is calibrated to.
"""

from __future__ import annotations

import logging

from flwr.server.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
)
from flwr.supercore.differential_privacy import add_gaussian_noise_to_params, compute_stdv

from fedge.server.strategy import customer_name

log = logging.getLogger("fedge.coordinator")


class _NoiseOnSurvivors:
    """aggregate_fit shared by both wrappers: aggregate, noise for the survivors, then ``after_round``. What was
    used (clip, noise stdev, survivors) goes into the round's outcome, which the registry records."""

    strategy: object
    noise_multiplier: float
    clipping_norm: float

    def aggregate_fit(self, server_round, results, failures):
        params, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if params is None:
            return None, metrics
        outcome = self.strategy.outcome
        survivors = set(outcome.clients)  # the updates actually averaged (not refused, not rejected)
        n = len(survivors)
        clip = self.clipping_norm  # the bound the customers clipped to this round
        stdev = compute_stdv(self.noise_multiplier, clip, n)
        params = add_gaussian_noise_to_params(params, self.noise_multiplier, clip, n)
        log.info(
            "round %d: central DP noise stdev %.5f (noise multiplier %.3f, clip %.4f, %d survivors of %d sampled)",
            server_round,
            stdev,
            self.noise_multiplier,
            clip,
            n,
            len(results) + len(failures),
        )
        self.after_round([(p, r) for p, r in results if customer_name(p, r) in survivors])
        outcome.central_dp = {"clip": clip, "stdev": stdev, "survivors": n, "next_clip": self.clipping_norm}
        return params, metrics

    def after_round(self, accepted) -> None:
        pass


class CentralDP(_NoiseOnSurvivors, DifferentialPrivacyClientSideFixedClipping):  # type: ignore[misc]  # Flower types .strategy as Strategy, we as FedgeFedAvg
    def __init__(self, strategy, noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> None:
        super().__init__(
            strategy,
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            num_sampled_clients=num_sampled_clients,
        )


class AdaptiveCentralDP(_NoiseOnSurvivors, DifferentialPrivacyClientSideAdaptiveClipping):  # type: ignore[misc]
    """``--dp-adaptive``: the clipping norm starts at ``--dp-clip`` and follows the ``target_quantile`` of the
    customers' update norms (geometric update, learning rate ``clip_lr``), learned from noised counts."""

    def __init__(
        self,
        strategy,
        noise_multiplier: float,
        initial_clipping_norm: float,
        num_sampled_clients: int,
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
    ) -> None:
        super().__init__(
            strategy,
            noise_multiplier=noise_multiplier,
            num_sampled_clients=num_sampled_clients,
            initial_clipping_norm=initial_clipping_norm,
            target_clipped_quantile=target_quantile,
            clip_norm_lr=clip_lr,
            clipped_count_stddev=count_noise(noise_multiplier, num_sampled_clients),
        )

    def after_round(self, accepted) -> None:
        if accepted:
            self._update_clip_norm(accepted)


def count_noise(noise_multiplier: float, clients: int) -> float:
    """Std of the noise on the count of unclipped updates: Flower's default (clients / 20), raised to the
    update's noise multiplier so that the split of the privacy budget is always possible."""
    return max(clients / 20, noise_multiplier)
