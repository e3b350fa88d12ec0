"""Central DP that works with SecAgg+: Flower's client-side fixed-clipping wrapper (customers clip their updates,
client/clipping.py; the coordinator adds Gaussian noise to the aggregate), subclassed to fix two of its traps
measured on Flower 1.41:

* the legacy wrapper returns no aggregate at all when any client failed, silently discarding the whole round:
  here the survivors' aggregate is noised and kept (the failures are recorded in the round);
* its noise is calibrated to the number of clients *sampled*; the aggregate is an average over the clients
  whose updates were actually aggregated, so the standard deviation sigma * C / n uses n = survivors.

Updates are averaged with equal weights under DP (clients report weight 1), so each customer's influence on the
average is bounded by C / n, which is what the noise is calibrated to.
"""
from __future__ import annotations

import logging

from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import add_gaussian_noise_to_params, compute_stdv

log = logging.getLogger("fedge.coordinator")


class CentralDP(DifferentialPrivacyClientSideFixedClipping):
    def __init__(self, strategy, noise_multiplier: float, clipping_norm: float, num_sampled_clients: int) -> None:
        super().__init__(strategy, noise_multiplier=noise_multiplier, clipping_norm=clipping_norm,
                         num_sampled_clients=num_sampled_clients)
        self.last_stdev: float | None = None
        self.last_survivors = 0

    def aggregate_fit(self, server_round, results, failures):
        params, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if params is None:
            return None, metrics
        n = len(self.strategy.outcome.clients)  # the updates actually averaged (not refused, not rejected)
        self.last_survivors, self.last_stdev = n, compute_stdv(self.noise_multiplier, self.clipping_norm, n)
        params = add_gaussian_noise_to_params(params, self.noise_multiplier, self.clipping_norm, n)
        log.info("round %d: central DP noise stdev %.5f (sigma %.3f, clip %.3f, %d survivors of %d sampled)",
                 server_round, self.last_stdev, self.noise_multiplier, self.clipping_norm, n, len(results) + len(failures))
        return params, metrics
