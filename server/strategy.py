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
    # evaluation of the model the clients received (the previous round's global model), from fit replies
    prev_eval: "Evaluation | None" = None


@dataclass
class Evaluation:
    """A global model evaluated on the customers' holdouts, aggregated weighted by holdout size."""
    accuracy: float
    loss: float
    per_client: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def aggregate(cls, rows: list[tuple[str, int, float, float]]) -> "Evaluation | None":
        """rows: (customer, holdout examples, loss, accuracy)."""
        total = sum(n for _, n, _, _ in rows)
        if total == 0:
            return None
        return cls(
            accuracy=sum(n * a for _, n, _, a in rows) / total,
            loss=sum(n * l for _, n, l, _ in rows) / total,
            per_client={c: {"eval_examples": n, "eval_loss": l, "eval_accuracy": a} for c, n, l, a in rows},
        )


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
        self.final_eval: Evaluation | None = None

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
        # clients first evaluate the model they receive (last round's global model) on their holdouts: this
        # saves a whole message exchange per round; the final model gets its own evaluate exchange
        ins = FitIns(parameters, {**self.fit_config, "round": server_round, "evaluate-incoming": server_round > 1})
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
        evals = []
        for proxy, res in results:
            m = dict(res.metrics)
            name = str(m.pop("customer", f"node-{proxy.node_id}"))
            out.clients.append(name)
            out.client_metrics[name] = {"node_id": proxy.node_id, "num_examples": res.num_examples,
                                        **{k: v for k, v in m.items() if not k.startswith("eval_")}}
            if "eval_examples" in m:
                evals.append((name, int(m["eval_examples"]), float(m["eval_loss"]), float(m["eval_accuracy"])))
        out.clients.sort()
        out.prev_eval = Evaluation.aggregate(evals)
        params, metrics = super().aggregate_fit(server_round, results, failures)
        out.aggregated = params is not None
        return params, metrics

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures):
        self.outcome.failures += [f"evaluate: {describe_failure(f)}" for f in failures]
        rows = [(str(r.metrics.get("customer", f"node-{p.node_id}")), r.num_examples, r.loss,
                 float(r.metrics["accuracy"])) for p, r in results]
        self.final_eval = Evaluation.aggregate(rows)
        if self.final_eval is None:
            return None, {}
        return self.final_eval.loss, {"accuracy": self.final_eval.accuracy}

    def evaluate(self, server_round: int, parameters: Parameters):
        return None  # no central data: evaluation happens on the customers' holdouts
