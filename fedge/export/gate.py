"""Stage: the federated accuracy gate. Customers evaluate FP32 and INT8 on their holdouts; the coordinator
weights by holdout size and refuses the release if INT8 loses more than ``max_drop``."""
from __future__ import annotations

from dataclasses import dataclass


class GateFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class GateReport:
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float
    per_customer: dict[str, dict]
    examples: int
    max_drop: float

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def passed(self) -> bool:
        return self.accuracy_drop <= self.max_drop

    def to_json(self) -> dict:
        return {"fp32_accuracy": self.fp32_accuracy, "int8_accuracy": self.int8_accuracy,
                "accuracy_drop": self.accuracy_drop, "top1_agreement": self.agreement, "examples": self.examples,
                "max_accuracy_drop": self.max_drop, "passed": self.passed, "per_customer": self.per_customer}


def aggregate_gate(results: dict[str, dict], max_drop: float, candidate: str = "int8_cpu") -> GateReport:
    """results: customer -> {"examples": n, "accuracy": {"fp32": a, kind: b}, "agreement": {kind: c}}."""
    total = sum(r["examples"] for r in results.values())
    if total == 0:
        raise GateFailed("no holdout examples reported by any customer")

    def weighted(get) -> float:
        return sum(get(r) * r["examples"] for r in results.values()) / total

    per = {c: {"examples": r["examples"], "fp32_accuracy": r["accuracy"]["fp32"],
               "int8_accuracy": r["accuracy"][candidate], "top1_agreement": r["agreement"][candidate]}
           for c, r in results.items()}
    return GateReport(weighted(lambda r: r["accuracy"]["fp32"]), weighted(lambda r: r["accuracy"][candidate]),
                      weighted(lambda r: r["agreement"][candidate]), per, total, max_drop)
