"""The loop demo's world, made from the shipped intent data: customers' labelled files, and the traffic devices see
later. Part of the utterances never reaches training: pool A is what the devices of the companies that send
corrections are asked (their agents correct it), pool B is held out to measure accuracy before and after. Traffic
shifts the way a month of new slang does (:func:`shifted`: key words replaced by ones no customer's data holds),
which keeps every utterance's intent, so the served answers can be checked."""

from __future__ import annotations

import csv
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SLANG = {  # each intent's key words, as customers start saying them
    "card": "plastic",
    "cards": "plastics",
    "stolen": "nicked",
    "lost": "misplaced",
    "block": "kill",
    "freeze": "halt",
    "upgrade": "swap",
    "phone": "mobile",
    "new": "shiny",
    "transfer": "wire",
    "send": "zap",
    "money": "dosh",
    "balance": "funds",
    "account": "acct",
    "much": "lots",
    "roaming": "overseas",
    "abroad": "offshore",
    "travel": "trip",
    "charge": "fee",
    "dispute": "contest",
    "transaction": "txn",
    "double": "twice",
    "cancel": "ditch",
    "terminate": "quit",
    "service": "subscription",
    "close": "end",
    "bill": "invoice",
    "pay": "settle",
    "payment": "instalment",
    "internet": "wifi",
    "working": "up",
    "coverage": "signal",
    "outage": "blackout",
    "data": "gigs",
    "usage": "consumption",
    "pin": "passcode",
    "reset": "redo",
    "change": "alter",
    "loan": "financing",
    "mortgage": "homeloan",
    "borrow": "lend",
}
_WORD = re.compile(r"[A-Za-z']+")
Utterance = tuple[str, str]  # (text, label)


def shifted(text: str) -> str:
    """The same request in next month's words."""
    return _WORD.sub(lambda m: SLANG.get(m.group(0).lower(), m.group(0)), text)


@dataclass(frozen=True)
class LoopData:
    customers: list[Path]  # one labelled CSV per customer
    pool_a: list[Utterance]  # asked on the correcting companies' devices, corrected by their agents
    pool_b: list[Utterance]  # held out: what accuracy is measured on, before and after


def loop_data(out: Path, names: tuple[str, ...], seed: int = 0, alpha: float = 1.0) -> LoopData:
    """60% of the shipped utterances split non-IID (Dirichlet ``alpha``) among the customers, 20% each for the
    two traffic pools (seeded)."""
    from fedge.core.tasks.intent import IntentTask
    from fedge.core.tasks.partition import dirichlet_partition

    task = IntentTask()
    texts, labels = task.reference_texts()
    order = np.random.default_rng(seed).permutation(len(texts))
    n = len(texts)
    train, pool_a, pool_b = order[: int(0.6 * n)], order[int(0.6 * n) : int(0.8 * n)], order[int(0.8 * n) :]
    y = np.array([task.labels.index(labels[i]) for i in train])
    (out / "data").mkdir(parents=True, exist_ok=True)
    files = []
    for name, idx in zip(names, dirichlet_partition(y, len(names), alpha, seed)):
        path = out / "data" / f"{name}.csv"
        write_csv(path, [(texts[train[i]], labels[train[i]]) for i in sorted(idx)])
        files.append(path)
    return LoopData(files, [(texts[i], labels[i]) for i in pool_a], [(texts[i], labels[i]) for i in pool_b])


def write_csv(path: Path, rows: list[Utterance]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def ask(http_url: str, model: str, text: str) -> tuple[str, str, int]:
    """One REST inference -> (the served label, the request id the device returned, the model version)."""
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    got = _post(http_url, f"/v2/models/{model}/infer", doc)
    label = next(o for o in got["outputs"] if o["name"] == "label")["data"][0]
    return label, got.get("id", ""), int(got["model_version"])


def correct(http_url: str, model: str, request_id: str, label: str) -> dict:
    """What an agent's tool sends once the ticket's intent is known."""
    return _post(http_url, f"/v2/models/{model}/feedback", {"id": request_id, "label": label})


def health(http_url: str, model: str) -> dict:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/health", timeout=30) as r:
        return json.loads(r.read())


def _post(http_url: str, path: str, doc: dict) -> dict:
    req = urllib.request.Request(f"http://{http_url}{path}", json.dumps(doc).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path}: HTTP {e.code} {e.read()[:300]!r}") from None
