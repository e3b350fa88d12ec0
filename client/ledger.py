"""The customer's privacy ledger: an append-only JSON-lines file in the daemon's state dir, one entry per round
the customer trained (or refused), each entry chained to the previous one by sha256, so any edit, deletion or
reordering of earlier lines is detected (the chain's head is also kept in a second file). Entries record the ε
a run has spent so far at the customer's δ; the total is the sum over runs (composition across runs). Rounds
trained without DP (only possible without a limit) are recorded too; their runs are listed as non-private.

The limit (``--max-epsilon``) is the customer's own, given when starting the daemon; nothing the coordinator
sends is read into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError, FedgeUserError

LEDGER = "privacy-ledger.jsonl"
HEAD = "privacy-ledger.head"
GENESIS = "0" * 64


class LedgerCorrupt(FedgeUserError, RuntimeError):
    pass


def _digest(prev: str, body: dict) -> str:
    return hashlib.sha256((prev + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()).hexdigest()


@dataclass(frozen=True)
class Budget:
    max_epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.max_epsilon > 0 or not 0 < self.delta < 1:
            raise ConfigError(f"need --max-epsilon > 0 and 0 < --delta < 1, got {self.max_epsilon}, {self.delta}")


class Ledger:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LEDGER
        self.head_path = self.dir / HEAD

    def entries(self) -> list[dict]:
        """Every entry, after checking the whole chain; raises LedgerCorrupt naming the first bad line."""
        if not self.path.exists():
            if self.head_path.exists() and self.head_path.read_text().strip() != GENESIS:
                raise LedgerCorrupt(f"{self.path} is missing but {self.head_path} says entries were written")
            return []
        prev, out = GENESIS, []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
                body = {k: v for k, v in entry.items() if k not in ("prev", "hash")}
            except (json.JSONDecodeError, AttributeError):
                raise LedgerCorrupt(f"{self.path}:{n}: not a ledger entry") from None
            if entry.get("prev") != prev or entry.get("hash") != _digest(prev, body):
                raise LedgerCorrupt(f"{self.path}:{n}: entry does not match its hash chain (edited or reordered)")
            prev = entry["hash"]
            out.append(entry)
        head = self.head_path.read_text().strip() if self.head_path.exists() else GENESIS
        if head != prev:
            raise LedgerCorrupt(f"{self.path}: last entry does not match {self.head_path} (entries removed?)")
        return out

    def append(self, body: dict) -> dict:
        entries = self.entries()
        prev = entries[-1]["hash"] if entries else GENESIS
        body = {"seq": len(entries) + 1, "time": round(time.time(), 3), **body}
        entry = {**body, "prev": prev, "hash": _digest(prev, body)}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(entry["hash"])
        os.replace(tmp, self.head_path)
        return entry

    # -- what has been spent ---------------------------------------------------------------------------------
    def runs(self) -> dict[str, dict]:
        """run key -> {"epsilon": ε spent so far in that run, "rounds": [...], "history": DP-SGD segments}."""
        out: dict[str, dict] = {}
        for e in self.entries():
            r = out.setdefault(
                e["run"],
                {
                    "run": e["run"],
                    "epsilon": 0.0,
                    "rounds": [],
                    "refused": [],
                    "history": [],
                    "mechanism": e.get("mechanism"),
                },
            )
            if e.get("refused"):
                r["refused"].append({"round": e["round"], "reason": e["refused"]})
                continue
            if e.get("epsilon_run") is None:  # took part without DP: unbounded, listed apart from the total
                r["non_private"] = True
                r["rounds"].append(e["round"])
                continue
            r["epsilon"] = float(e["epsilon_run"])
            r["rounds"].append(e["round"])
            r["history"] = e.get("history", r["history"])
            r["mechanism"] = e.get("mechanism")
        return out

    def total(self) -> float:
        """ε spent over the differentially private runs (runs without DP are listed, not summed: unbounded)."""
        return sum(r["epsilon"] for r in self.runs().values())

    def document(self, budget: Budget | None = None) -> dict:
        runs = self.runs()
        total = sum(r["epsilon"] for r in runs.values())
        doc = {
            "ledger": str(self.path),
            "total_epsilon": total,
            "runs": list(runs.values()),
            "non_private_runs": [k for k, r in runs.items() if r.get("non_private")],
        }
        if budget is not None:
            doc |= {"max_epsilon": budget.max_epsilon, "delta": budget.delta, "remaining": budget.max_epsilon - total}
        return doc
