"""``intent``: customer-service intent classification with a TextCNN over a hashing tokenizer.

Private data is ``.csv`` or ``.jsonl`` with ``text`` and ``label``. The tokenizer has no vocabulary to ship:
its parameters go into the release manifest and the edge tokenizes the same way (fedge.edge_runtime.serving.tokenizer).
Long documents are truncated to ``max_len`` tokens; the max-pool over time makes the model length-agnostic.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fedge.core.tasks.base import Task, TensorSpec, TrainDefaults
from fedge.core.tasks.data import Dataset, label_ids, read_text_records
from fedge.edge_runtime.serving.tokenizer import HashingTokenizer

INTENT_LABELS = (
    "check_balance",
    "lost_card",
    "transfer_money",
    "dispute_charge",
    "change_pin",
    "loan_inquiry",
    "pay_bill",
    "data_usage",
    "roaming",
    "network_outage",
    "upgrade_device",
    "cancel_service",
)


def build_text_cnn(num_buckets: int, num_classes: int, dim: int = 64, channels: int = 64, kernels=(2, 3, 4)):
    import torch
    import torch.nn as nn

    class TextCNN(nn.Module):
        """ids (N, L) int64 -> logits (N, C). Embedding -> parallel 1-D convs -> max over time -> dense."""

        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(num_buckets, dim, padding_idx=0)
            self.convs = nn.ModuleList(nn.Conv1d(dim, channels, k, padding=k - 1) for k in kernels)
            self.dropout = nn.Dropout(0.3)
            self.fc = nn.Linear(channels * len(kernels), num_classes)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            e = self.embedding(ids).transpose(1, 2)  # (N, dim, L)
            pooled = [torch.relu(conv(e)).amax(dim=2) for conv in self.convs]  # k x (N, channels)
            return self.fc(self.dropout(torch.cat(pooled, dim=1)))  # (N, C)

    return TextCNN()


@dataclass(frozen=True)
class IntentTask(Task):
    name: str = "intent"
    labels: tuple[str, ...] = INTENT_LABELS
    # FedProx (mu 0.1): customers' intents are skewed, and the proximal term keeps their local models from
    # drifting toward their own labels (in-process, 5 seeds, 6 rounds: 0.98 mean holdout accuracy against 0.95)
    defaults: TrainDefaults = field(
        default_factory=lambda: TrainDefaults(local_epochs=3, batch_size=16, lr=3e-3, proximal_mu=0.1)
    )
    tokenizer: HashingTokenizer = field(default_factory=lambda: HashingTokenizer(num_buckets=4096, max_len=128))

    def build_model(self):
        return build_text_cnn(self.tokenizer.num_buckets, self.num_classes)

    def encode(self, records: list[tuple[int, str, str]], path: Path | str) -> Dataset:
        y = label_ids(records, self.labels, path)
        return Dataset(self.tokenizer.encode_batch([t for _, t, _ in records]), y)

    def load_data(self, path: Path) -> Dataset:
        return self.encode(read_text_records(Path(path)), path)

    def reference_data(self) -> Dataset:
        ref = resources.files("fedge") / "data" / "intent.csv"
        with resources.as_file(ref) as p:
            return self.load_data(p)

    def reference_texts(self) -> tuple[list[str], list[str]]:
        ref = resources.files("fedge") / "data" / "intent.csv"
        with resources.as_file(ref) as p:
            recs = read_text_records(p)
        return [t for _, t, _ in recs], [lab for _, _, lab in recs]

    def input_spec(self) -> TensorSpec:
        return TensorSpec("input", "INT64", (-1, self.tokenizer.max_len))

    def preprocessing(self) -> dict:
        return {"tokenizer": self.tokenizer.to_dict(), "raw_input": {"name": "text", "datatype": "BYTES"}}

    def write_texts(self, path: Path, texts: list[str], labels: list[str]) -> None:
        path = Path(path)
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
            return
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(zip(texts, labels))
