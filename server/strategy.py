"""fedge's aggregation strategy: Flower's FedAvg with bounded waits and per-customer bookkeeping.

Flower's legacy FedAvg samples through ``ClientManager.sample``, which waits up to a day for
``min_available_clients``. fedge samples every connected client after a bounded wait, and a round whose
surviving updates fall below ``min_clients`` fails the run with the numbers in the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg


class InsufficientClients(RuntimeError):
    """Too few customers connected or survived a round for it to count."""


@dataclass
class RoundOutcome:
    """What the coordinator learned in one round (fit + evaluate), for the registry."""
    round: int
    clients: list[str] = field(default_factory=list)
    client_metrics: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    aggregated: bool = False
    accuracy: float | None = None
    loss: float | None = None


def describe_failure(failure) -> str:
    if isinstance(failure, BaseException):
        return str(failure)
    proxy, res = failure
    return f"node {proxy.node_id}: {res.status.code.name} {res.status.message}"


class FedgeFedAvg(FedAvg):
    def __init__(self, *, min_clients: int, wait_timeout: float, initial_parameters: Parameters,
                 fit_config: dict[str, Scalar]) -> None:
        super().__init__(
            fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=min_clients, min_evaluate_clients=1,
            min_available_clients=min_clients, initial_parameters=initial_parameters, accept_failures=True,
        )
        self.min_clients = min_clients
        self.wait_timeout = wait_timeout
        self.fit_config = fit_config
        self.outcome = RoundOutcome(round=0)

    def begin_round(self, server_round: int) -> RoundOutcome:
        self.outcome = RoundOutcome(round=server_round)
        return self.outcome

    def _connected(self, client_manager: ClientManager) -> list[ClientProxy]:
        if not client_manager.wait_for(self.min_clients, timeout=int(self.wait_timeout)):
            raise InsufficientClients(
                f"only {client_manager.num_available()} client(s) connected after {self.wait_timeout:.0f}s;"
                f" the run needs --min-clients {self.min_clients}"
            )
        return sorted(client_manager.all().values(), key=lambda p: p.node_id)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        ins = FitIns(parameters, {**self.fit_config, "round": server_round})
        return [(proxy, ins) for proxy in self._connected(client_manager)]

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        ins = EvaluateIns(parameters, {"round": server_round})
        return [(proxy, ins) for proxy in self._connected(client_manager)]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures):
        out = self.outcome
        out.failures += [describe_failure(f) for f in failures]
        if len(results) < self.min_clients:
            raise InsufficientClients(
                f"round {server_round}: {len(results)} client update(s) arrived, --min-clients is {self.min_clients};"
                f" failures: {out.failures or 'none'}"
            )
        for proxy, res in results:
            name = str(res.metrics.get("customer", f"node-{proxy.node_id}"))
            out.clients.append(name)
            out.client_metrics.setdefault(name, {}).update(
                {"node_id": proxy.node_id, "num_examples": res.num_examples,
                 **{f"fit_{k}": v for k, v in res.metrics.items() if k != "customer"}}
            )
        out.clients.sort()
        params, metrics = super().aggregate_fit(server_round, results, failures)
        out.aggregated = params is not None
        return params, metrics

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures):
        out = self.outcome
        out.failures += [f"evaluate: {describe_failure(f)}" for f in failures]
        total = sum(r.num_examples for _, r in results)
        if total == 0:
            return None, {}
        for proxy, res in results:
            name = str(res.metrics.get("customer", f"node-{proxy.node_id}"))
            out.client_metrics.setdefault(name, {}).update(
                {"node_id": proxy.node_id, "eval_examples": res.num_examples, "eval_loss": res.loss,
                 "eval_accuracy": float(res.metrics.get("accuracy", float("nan")))}
            )
        out.loss = sum(r.loss * r.num_examples for _, r in results) / total
        out.accuracy = sum(float(r.metrics["accuracy"]) * r.num_examples for _, r in results) / total
        return out.loss, {"accuracy": out.accuracy}

    def evaluate(self, server_round: int, parameters: Parameters):
        return None  # no central data: evaluation happens on the customers' holdouts
