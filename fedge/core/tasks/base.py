"""What a task is: a model, a data format, and the public reference data used for demos and simulation.

Coordinator, client daemon, export and simulation all see a task through this one interface. A customer
brings its own by pointing ``--task`` at ``module:attribute`` holding a :class:`Task`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from fedge.core.tasks.data import Dataset

if TYPE_CHECKING:  # torch is imported lazily: the ClientApp module must stay import-light
    import numpy as np
    import torch


class TaskKey:
    """Keys of the run's task settings, sent in every fit and evaluate config and every export job, so that a
    customer's daemon started before the run learns them from the run's first message."""

    LABELS = "labels"  # the run's label catalogue, JSON list ("" = the task's own)
    BASE_SHA256 = "base-sha256"  # text task: the base model's identity (fedge.core.tasks.encoder.base_sha256)
    LORA_R = "lora-r"
    LORA_ALPHA = "lora-alpha"
    LORA_TARGETS = "lora-targets"  # comma-separated module names
    PRUNE = "prune"  # text task: train under this sparsity mask (recovery after pruning)

    ALL = (LABELS, BASE_SHA256, LORA_R, LORA_ALPHA, LORA_TARGETS, PRUNE)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, in KServe v2 terms (shape with -1 for the batch axis)."""

    name: str
    datatype: str  # KServe v2 datatype: FP32, INT64, BYTES, ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TrainDefaults:
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    proximal_mu: float = 0.0  # FedProx's proximal term (0: plain FedAvg local training)


@dataclass(frozen=True)
class Task(ABC):
    name: str
    labels: tuple[str, ...]
    defaults: TrainDefaults = field(default_factory=TrainDefaults)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (seed it before calling for reproducibility)."""

    @abstractmethod
    def load_data(self, path: Path) -> Dataset:
        """Read and validate a customer's private data file; raise DataError naming file and row."""

    @abstractmethod
    def reference_data(self) -> Dataset:
        """Public data shipped with fedge for the demo, tests and simulation."""

    @abstractmethod
    def input_spec(self) -> TensorSpec:
        """The model's input as the ONNX graph sees it (after on-device preprocessing)."""

    def preprocessing(self) -> dict:
        """What the edge must do to raw inputs before the model (e.g. tokenizer parameters)."""
        return {}

    export_profile: ClassVar[str] = "cnn"  # how the export fuses and quantizes the model (fedge.export; "transformer")

    def export_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the export writes to ONNX (a trained model with adapters merges them here)."""
        return model

    def hold_masks(self, model: torch.nn.Module) -> dict | None:
        """Recovery rounds after pruning: {parameter: 0/1 mask} that training multiplies in after every step (the
        zeros of the received weights); None when the model holds its own mask (the text task)."""
        return {n: (p != 0).float() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}

    def sample_inputs(self) -> np.ndarray:
        """Model inputs (numpy) the export traces the model with and checks ONNX parity on."""
        return self.reference_data().x[:64]

    def bundle_files(self) -> dict[str, Path]:
        """Files the release ships beside the model (e.g. a tokenizer), by their name in the bundle."""
        return {}

    def write_data(self, path: Path, ds: Dataset) -> None:
        """Write ``ds`` in this task's private data format (used by the demo's partitioner)."""
        raise NotImplementedError(f"task {self.name!r} cannot write data files")
