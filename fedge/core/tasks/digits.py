"""``digits``: scikit-learn's bundled 8x8 handwritten digits and a small CNN (38 K parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedge.core.tasks.base import Task, TensorSpec, TrainDefaults
from fedge.core.tasks.data import Dataset, load_npz

SAMPLE_SHAPE = (1, 8, 8)


def build_digits_cnn():
    from collections import OrderedDict

    import torch.nn as nn

    # tanh rather than ReLU: bounded activations keep per-sample gradients small, so DP-SGD clips less signal
    # away (Papernot et al. 2021, "tempered sigmoids"); measured here on 3 federated customers at ε = 8: 0.84 with
    # ReLU -> 0.93 with tanh, and the non-private model is as good (0.986 -> 0.992). Activations hold no
    # parameters: checkpoints and exchanged arrays are unchanged.
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
                ("act1", nn.Tanh()),  # (N,16,8,8)
                ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
                ("act2", nn.Tanh()),  # (N,32,8,8)
                ("pool", nn.MaxPool2d(2)),  # (N,32,4,4)
                ("flatten", nn.Flatten()),  # (N,512)
                ("fc1", nn.Linear(512, 64)),
                ("act3", nn.Tanh()),
                ("fc2", nn.Linear(64, 10)),  # (N,10) logits
            ]
        )
    )


@dataclass(frozen=True)
class DigitsTask(Task):
    name: str = "digits"
    labels: tuple[str, ...] = tuple(str(d) for d in range(10))
    defaults: TrainDefaults = field(default_factory=lambda: TrainDefaults(local_epochs=2, batch_size=32, lr=3e-3))

    def build_model(self):
        return build_digits_cnn()

    def load_data(self, path: Path) -> Dataset:
        return load_npz(Path(path), SAMPLE_SHAPE, self.num_classes)

    def reference_data(self) -> Dataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (1797,1,8,8) in [0,1]
        return Dataset(x, bunch.target.astype(np.int64))

    def input_spec(self) -> TensorSpec:
        return TensorSpec("input", "FP32", (-1, *SAMPLE_SHAPE))

    def write_data(self, path: Path, ds: Dataset) -> None:
        np.savez(path, x=ds.x.astype(np.float32), y=ds.y.astype(np.int64))
