"""Stage: the federated accuracy gate. Customers evaluate FP32 and INT8 on their holdouts; the coordinator
weights by holdout size and refuses the release if INT8 loses more than ``max_drop``. Customers also compare their
runtime's INT8 answers with the ONNX specification's (fedge.core.onnx_reference) on a bounded sample: a release
whose INT8 answers depend on the CPU is flagged with the numbers (``cpu_dependent``), since devices on other CPUs
would not give the answers the gate measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedge.edge_runtime.common.errors import FedgeUserError


class GateFailed(FedgeUserError, RuntimeError):
    pass


@dataclass(frozen=True)
class GateReport:
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float
    per_customer: dict[str, dict]
    examples: int
    max_drop: float
    reference: dict = field(default_factory=dict)  # variant -> rows, agreement with onnx.reference, max |diff|, CPUs
    candidate: str = "int8_cpu"
    variants: dict = field(default_factory=dict)  # every INT8 variant -> accuracy, drop, top-1 agreement
    gated: tuple[str, ...] = ("int8_cpu",)  # the variants whose drop must stay within max_drop
    monitoring: dict = field(default_factory=dict)  # the drift reference and temperature (export.reference)
    forgetting: dict = field(default_factory=dict)  # a run from a release: export.forgetting's report

    @property
    def accuracy_drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def passed(self) -> bool:
        drops = [self.variants[k]["drop"] for k in self.gated if k in self.variants] or [self.accuracy_drop]
        return max(drops) <= self.max_drop

    @property
    def cpu_dependent(self) -> bool:
        """The served INT8 variant's answers on some customer's CPU differ from the ONNX specification's."""
        ref = self.reference.get(self.candidate)
        return ref is not None and ref["agreement"] < 1.0

    def to_json(self) -> dict:
        return {
            "fp32_accuracy": self.fp32_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "accuracy_drop": self.accuracy_drop,
            "top1_agreement": self.agreement,
            "examples": self.examples,
            "max_accuracy_drop": self.max_drop,
            "passed": self.passed,
            "per_customer": self.per_customer,
            "reference": self.reference,
            "cpu_dependent": self.cpu_dependent,
            "variants": self.variants,
            "gated": list(self.gated),
            "monitoring": self.monitoring,
            "forgetting": self.forgetting,
        }


def aggregate_gate(
    results: dict[str, dict], max_drop: float, candidate: str = "int8_cpu", gated: tuple[str, ...] = ("int8_cpu",)
) -> GateReport:
    """results: customer -> {"examples": n, "accuracy": {"fp32": a, kind: b}, "agreement": {kind: c}}. Every INT8
    variant is reported; those in ``gated`` must each lose at most ``max_drop``."""
    total = sum(r["examples"] for r in results.values())
    if total == 0:
        raise GateFailed("no holdout examples reported by any customer")

    def weighted(get) -> float:
        return sum(get(r) * r["examples"] for r in results.values()) / total

    per = {
        c: {
            "examples": r["examples"],
            "fp32_accuracy": r["accuracy"]["fp32"],
            "int8_accuracy": r["accuracy"][candidate],
            "top1_agreement": r["agreement"][candidate],
            "accuracy": r["accuracy"],
        }
        for c, r in results.items()
    }
    fp32 = weighted(lambda r: r["accuracy"]["fp32"])
    kinds = [k for k in next(iter(results.values()))["accuracy"] if k != "fp32"]
    variants = {
        k: {
            "accuracy": weighted(lambda r, k=k: r["accuracy"][k]),
            "drop": fp32 - weighted(lambda r, k=k: r["accuracy"][k]),
            "top1_agreement": weighted(lambda r, k=k: r["agreement"][k]),
        }
        for k in kinds
    }
    return GateReport(
        fp32,
        weighted(lambda r: r["accuracy"][candidate]),
        weighted(lambda r: r["agreement"][candidate]),
        per,
        total,
        max_drop,
        reference_report(results),
        candidate,
        variants,
        tuple(k for k in gated if k in variants),
    )


def reference_report(results: dict[str, dict]) -> dict:
    """Per variant: how the customers' runtimes agree with the ONNX specification, over every row they checked
    (agreement weighted by rows; the largest logit difference; each customer's figures and CPU)."""
    out: dict[str, dict] = {}
    for customer, r in results.items():
        for kind, ref in (r.get("reference") or {}).items():
            v = out.setdefault(kind, {"rows": 0, "agreed": 0.0, "max_abs_diff": 0.0, "per_customer": {}})
            v["per_customer"][customer] = ref
            if ref.get("agreement") is None:  # the reference could not evaluate this model there
                continue
            v["rows"] += ref["rows"]
            v["agreed"] += ref["agreement"] * ref["rows"]
            v["max_abs_diff"] = max(v["max_abs_diff"], ref["max_abs_diff"])
    return {
        kind: {
            "rows": v["rows"],
            "agreement": v["agreed"] / v["rows"] if v["rows"] else 1.0,
            "max_abs_diff": v["max_abs_diff"],
            "per_customer": v["per_customer"],
        }
        for kind, v in out.items()
    }
