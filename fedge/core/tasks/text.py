"""``text``: text classification by fine-tuning a pretrained Hugging Face encoder with LoRA, over the run's own label
catalogue (transfer learning; fedge.core.tasks.encoder holds the model).

Private data is ``.csv`` or ``.jsonl`` with ``text`` and ``label``, as for ``intent``. Texts become the base's
token ids here with transformers' tokenizer; the release ships the base's ``tokenizer.json`` and the device
tokenizes the same way with the ``tokenizers`` package (fedge.edge_runtime.serving.tokenizer). Without
``--labels`` the catalogue is the shipped intent catalogue, whose public data the demo and ``fedge simulate`` use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from fedge.core.tasks.base import Task, TensorSpec, TrainDefaults
from fedge.core.tasks.data import Dataset, label_ids, read_text_records
from fedge.core.tasks.encoder import LoraSettings, build_classifier, load_tokenizer, resolve_base_dir
from fedge.core.tasks.intent import INTENT_LABELS
from fedge.edge_runtime.common.errors import ConfigError

MAX_LEN = 128
TOKENIZER_FILE = "tokenizer.json"
# what the export traces the model with and checks parity on: no labels needed, only varied lengths
SAMPLE_TEXTS = (
    "hello",
    "I would like to talk to someone about my account please",
    "Ça coûte 20 € ?",
    "my order never arrived and nobody answers the phone, what should I do now?",
    "cancel",
    "is the service down in my area right now",
    "where can I find the invoice for last month",
    "thanks!",
)


@dataclass(frozen=True)
class TextTask(Task):
    name: str = "text"
    labels: tuple[str, ...] = INTENT_LABELS
    # LoRA + head over a pretrained base learns from few examples fast: a few epochs per round at a high rate
    defaults: TrainDefaults = field(default_factory=lambda: TrainDefaults(local_epochs=4, batch_size=16, lr=3e-3))
    base_dir: str = ""  # "" = the default base (fedge.core.tasks.encoder.default_base_dir)
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_len: int = MAX_LEN
    prune: str = ""  # train and export under this sparsity mask on the encoder (tasks.sparsity)

    @cached_property
    def base(self) -> Path:
        return resolve_base_dir(self.base_dir)

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.base)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def build_model(self):
        model = build_classifier(self.base, self.num_classes, self.lora, self.pad_id)
        if self.prune:
            from fedge.core.tasks.lora_model import hold_mask
            from fedge.core.tasks.sparsity import PruneConfig

            hold_mask(model, PruneConfig.parse(self.prune))
        return model

    def hold_masks(self, model) -> None:
        return None  # the model holds its mask itself (on the merged weights; see build_model)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (N, longest row) int64 ids, truncated to ``max_len`` and right-padded with the pad id."""
        if not texts:
            return np.zeros((0, 1), dtype=np.int64)
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_len, padding="longest", return_attention_mask=False
        )
        return np.asarray(enc["input_ids"], dtype=np.int64)

    def load_data(self, path: Path) -> Dataset:
        records = read_text_records(Path(path))
        y = label_ids(records, self.labels, path)
        return Dataset(self.encode_texts([t for _, t, _ in records]), y)

    def reference_data(self) -> Dataset:
        if tuple(self.labels) != INTENT_LABELS:
            raise ConfigError(
                "the text task ships public data for the intent catalogue only; with your own --labels"
                " give each customer its data file"
            )
        ref = resources.files("fedge") / "data" / "intent.csv"
        with resources.as_file(ref) as p:
            return self.load_data(p)

    export_profile = "transformer"

    def export_module(self, model):
        return model.merged()

    def sample_inputs(self) -> np.ndarray:
        return self.encode_texts(list(SAMPLE_TEXTS))

    def input_spec(self) -> TensorSpec:
        return TensorSpec("input", "INT64", (-1, -1))

    def preprocessing(self) -> dict:
        return {
            "tokenizer": {
                "kind": "hf-tokenizers",
                "file": TOKENIZER_FILE,
                "max_len": self.max_len,
                "pad_id": self.pad_id,
            },
            "raw_input": {"name": "text", "datatype": "BYTES"},
        }

    def bundle_files(self) -> dict[str, Path]:
        return {TOKENIZER_FILE: self.base / TOKENIZER_FILE}

    def write_data(self, path: Path, ds: Dataset) -> None:
        raise NotImplementedError("the text task's data are texts: write them with write_texts")
