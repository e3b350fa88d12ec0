"""fedge's aggregation strategy: Flower's FedAvg with bounded waits and per-customer bookkeeping.

Flower's legacy FedAvg samples through ``ClientManager.sample``, which waits up to a day for
``min_available_clients``. fedge samples every connected client after a bounded wait, and a round whose
surviving updates fall below ``min_clients`` fails the run with the numbers in the message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fedge.core.wire import Failure, FailureKind, FitKey, MetricKey
from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.server.aggregate import fedavg_fit_results, npy_view
from fedge.server.exchange import error_text
from fedge.server.robust import robust_aggregate, screen


def npy_arrays(res: FitRes) -> list:
    return [npy_view(t) for t in res.parameters.tensors]


class InsufficientClients(FedgeUserError, RuntimeError):
    """Too few customers connected or survived a round for it to count."""


@dataclass
class RoundOutcome:
    """What the coordinator learned in one round (fit + evaluate), for the registry."""

    round: int
    clients: list[str] = field(default_factory=list)
    client_metrics: dict[str, dict] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # customers who declined to train, and why
    rejected: list[dict] = field(default_factory=list)  # updates screened out before aggregation, and why
    privacy: dict = field(default_factory=dict)  # per-customer DP-SGD ε reported with the updates
    central_dp: dict = field(default_factory=dict)  # the clip and noise stdev central DP used this round
    sampled: list[int] = field(default_factory=list)  # node ids asked to train this round
    aggregated: bool = False
    # evaluation of the model the clients received (the previous round's global model), from fit replies
    prev_eval: Evaluation | None = None


@dataclass
class Evaluation:
    """A global model evaluated on the customers' holdouts, aggregated weighted by holdout size."""

    accuracy: float
    loss: float
    per_client: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def aggregate(cls, rows: list[tuple[str, int, float, float]]) -> Evaluation | None:
        """rows: (customer, holdout examples, loss, accuracy)."""
        total = sum(n for _, n, _, _ in rows)
        if total == 0:
            return None
        return cls(
            accuracy=sum(n * a for _, n, _, a in rows) / total,
            loss=sum(n * loss for _, n, loss, _ in rows) / total,
            per_client={
                c: {MetricKey.EVAL_EXAMPLES: n, MetricKey.EVAL_LOSS: loss, MetricKey.EVAL_ACCURACY: a}
                for c, n, loss, a in rows
            },
        )


def _brief(failures: list[Failure], n: int = 3, width: int = 300) -> str:
    """The first few failures, each cut short: enough to act on without a page of remote tracebacks."""
    if not failures:
        return "none"
    shown = [str(f) if len(str(f)) <= width else str(f)[:width] + "..." for f in failures[:n]]
    return "; ".join(shown) + (f" (+{len(failures) - n} more)" if len(failures) > n else "")


def _distinct(failures: list) -> list:
    """Flower 1.41's SecAgg+ workflow records each error reply of the masked-vector stage twice (two loops
    over the same messages wrap the same Error); keep one per underlying error."""
    seen, out = set(), []
    for f in failures:
        key = id(f.args[0]) if isinstance(f, BaseException) and len(f.args) == 1 else id(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def customer_name(proxy: ClientProxy, res) -> str:
    """Who sent a reply: the customer name its metrics carry, else its node id."""
    return str(res.metrics.get(MetricKey.CUSTOMER, f"node-{proxy.node_id}"))


def describe_failure(failure, stage: str = "fit") -> Failure:
    """A failure as Flower's workflows hand it over (fedge's own :class:`Failure`, an exception wrapping an error
    reply, or a (proxy, reply) with a non-OK status) -> a typed :class:`Failure`."""
    if isinstance(failure, Failure):
        return Failure(failure.kind, failure.node, failure.detail, stage)
    if isinstance(failure, BaseException):  # SecAgg+ wraps error replies as Exception(Error(...)), without the node
        inner = failure.args[0] if len(failure.args) == 1 else None
        text = error_text(inner) if hasattr(inner, "reason") else str(failure)
        return Failure(FailureKind.ERROR, None, text, stage)
    proxy, res = failure
    return Failure(FailureKind.STATUS, proxy.node_id, f"{res.status.code.name} {res.status.message}", stage)


class FedgeFedAvg(FedAvg):
    def __init__(
        self,
        *,
        min_clients: int,
        wait_timeout: float,
        initial_parameters: Parameters,
        fit_config: dict[str, Scalar],
        aggregator: str = "fedavg",
        max_update_norm: float = 0.0,
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=min_clients,
            min_evaluate_clients=1,
            min_available_clients=min_clients,
            initial_parameters=initial_parameters,
            accept_failures=True,
        )
        self.min_clients = min_clients
        self.wait_timeout = wait_timeout
        self.fit_config = fit_config
        self.outcome = RoundOutcome(round=0)
        self.final_eval: Evaluation | None = None
        self.aggregator, self.max_update_norm = aggregator, max_update_norm
        self.global_arrays: list | None = None
        self.names: dict[int, str] = {}  # node id -> customer, learned from replies (to name who dropped out)

    def begin_round(self, server_round: int, global_arrays: list | None = None) -> RoundOutcome:
        """``global_arrays``: the trained part of the model the clients receive (for update screening)."""
        self.outcome = RoundOutcome(round=server_round)
        self.global_arrays = global_arrays
        return self.outcome

    def _connected(self, client_manager: ClientManager) -> list[ClientProxy]:
        """The connected nodes, at least --min-clients of them. ``wait_for`` counts what Flower's node updater last
        saw (it first looks 5 s after the ServerApp starts, which lets customers that are still connecting join
        round 1); ``all()`` refreshes from the SuperLink first, so a node it has since counted gone (no heartbeat)
        is missing there: then wait again, within the same bound."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            left = deadline - time.monotonic()
            ready = left > 0 and client_manager.wait_for(self.min_clients, timeout=max(1, int(left)))
            if len(proxies := client_manager.all()) >= self.min_clients:
                return sorted(proxies.values(), key=lambda p: p.node_id)
            if not ready or time.monotonic() >= deadline:
                raise InsufficientClients(
                    f"only {len(proxies)} client(s) connected after {self.wait_timeout:.0f}s;"
                    f" the run needs --min-clients {self.min_clients}"
                )
            time.sleep(0.1)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        # clients first evaluate the model they receive (last round's global model) on their holdouts: this
        # saves a whole message exchange per round; the final model gets its own evaluate exchange
        ins = FitIns(
            parameters, {**self.fit_config, FitKey.ROUND: server_round, FitKey.EVALUATE_INCOMING: server_round > 1}
        )
        proxies = self._connected(client_manager)
        self.outcome.sampled = [p.node_id for p in proxies]
        return [(proxy, ins) for proxy in proxies]

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        ins = EvaluateIns(parameters, {**self.fit_config, FitKey.ROUND: server_round})  # the run's task settings too
        return [(proxy, ins) for proxy in self._connected(client_manager)]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures):
        out = self.outcome
        out.failures += [describe_failure(f) for f in _distinct(failures)]
        shared = len({id(res.parameters) for _, res in results}) == 1 and len(results) > 1  # SecAgg+: one aggregate
        evals, accepted = [], []
        for proxy, res in results:
            name = customer_name(proxy, res)
            m = {k: v for k, v in res.metrics.items() if k != MetricKey.CUSTOMER}
            self.names[proxy.node_id] = name
            if MetricKey.EVAL_EXAMPLES in m:
                evals.append(
                    (
                        name,
                        int(m[MetricKey.EVAL_EXAMPLES]),
                        float(m[MetricKey.EVAL_LOSS]),
                        float(m[MetricKey.EVAL_ACCURACY]),
                    )
                )
            if m.get(MetricKey.REFUSED):  # trained nothing; under SecAgg+ its masked share carried weight 0
                out.refused.append({"customer": name, "reason": str(m[MetricKey.REFUSED])})
                continue
            why, norm = (None, None) if shared else screen(npy_arrays(res), self.global_arrays, self.max_update_norm)
            if why is not None:
                out.rejected.append({"customer": name, "reason": why})
                continue
            out.clients.append(name)
            out.client_metrics[name] = {
                "node_id": proxy.node_id,
                "num_examples": res.num_examples,
                **{k: v for k, v in m.items() if not k.startswith(MetricKey.EVAL_PREFIX)},
            }
            if norm is not None:  # what an operator sets --max-update-norm from
                out.client_metrics[name]["update_norm"] = norm
            if MetricKey.DP_EPSILON in m:
                out.privacy[name] = {
                    "epsilon": float(m[MetricKey.DP_EPSILON]),
                    "delta": float(m.get(MetricKey.DP_DELTA, 0)),
                    "mechanism": str(m.get(MetricKey.DP_MECHANISM, "")),
                    "noise": float(m.get(MetricKey.DP_NOISE, 0)),
                }
            accepted.append((proxy, res))
        out.clients.sort()
        out.failures += self._dropouts({proxy.node_id for proxy, _ in results})
        out.prev_eval = Evaluation.aggregate(evals)
        if len(accepted) < self.min_clients:
            raise InsufficientClients(
                f"round {server_round}: {len(accepted)} usable client update(s), --min-clients is {self.min_clients};"
                f" refused: {out.refused or 'none'}; rejected: {out.rejected or 'none'}; failures:"
                f" {_brief(out.failures)}"
            )
        if self.aggregator != "fedavg" and not shared:
            arrays = robust_aggregate(
                self.aggregator, [npy_arrays(r) for _, r in accepted], [r.num_examples for _, r in accepted]
            )
        else:
            arrays = fedavg_fit_results(accepted)  # Flower's FedAvg math, faster (aggregate.py)
        params = ndarrays_to_parameters(arrays)
        metrics = {}
        if self.fit_metrics_aggregation_fn:
            metrics = self.fit_metrics_aggregation_fn([(res.num_examples, res.metrics) for _, res in accepted])
        out.aggregated = True
        return params, metrics

    def _dropouts(self, replied: set[int]) -> list[Failure]:
        """Sampled nodes that sent no update and that no failure names yet: under SecAgg+ a node that stops
        answering is simply left out of the protocol, with no error to record."""
        return self.dropouts([nid for nid in self.outcome.sampled if nid not in replied])

    def dropouts(self, silent: list[int]) -> list[Failure]:
        """A NO_UPDATE failure for each of the ``silent`` nodes that no failure of this round names yet."""
        named = {f.node for f in self.outcome.failures}
        return [
            Failure(
                FailureKind.NO_UPDATE,
                nid,
                f"{self.names.get(nid, 'unknown customer')} (node {nid}): sent no update this round",
            )
            for nid in silent
            if nid not in named
        ]

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures):
        self.outcome.failures += [describe_failure(f, "evaluate") for f in failures]
        rows = [(customer_name(p, r), r.num_examples, r.loss, float(r.metrics[MetricKey.ACCURACY])) for p, r in results]
        self.final_eval = Evaluation.aggregate(rows)
        if self.final_eval is None:
            return None, {}
        return self.final_eval.loss, {MetricKey.ACCURACY: self.final_eval.accuracy}

    def evaluate(self, server_round: int, parameters: Parameters):
        return None  # no central data: evaluation happens on the customers' holdouts
