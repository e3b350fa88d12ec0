"""Export profiles: one object per model family, each with its own way through the export's stages (how it is
pruned, exported and fused, pre-processed, quantized, gated). A task names its family
(``Task.export_profile``: "cnn" or "transformer"); the stages ask :func:`profile_of` and never test the name.

    >>> profile_of(get_task("text")).gated
    ('int8_cpu', 'int8_trt')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedge.core.tasks.base import Task
from fedge.export.prune import PruneConfig, prune_model
from fedge.export.quantize import Quantizer, quantize_cnn

FUSED_FP32 = "model.fp32.fused.onnx"  # beside model.fp32.onnx: the graph fused for ONNX Runtime, where a family fuses
Say = Callable[[str], None]


class ExportProfile:
    """The CNN family (digits, the intent TextCNN): the defaults every family starts from."""

    name: ClassVar[str] = "cnn"
    gated: ClassVar[tuple[str, ...]] = ("int8_cpu",)  # INT8 variants whose accuracy drop can refuse a release
    skip_symbolic_shape: ClassVar[bool] = False  # ONNX Runtime's symbolic shape inference fails on the graph
    mask_in_model: ClassVar[bool] = False  # pruning is a mask the model holds (not zeros in its weights)

    def prune(self, model: Any, spec: str) -> None:
        """Stage 1 on the loaded model: magnitude pruning of its stored weights."""
        prune_model(model, PruneConfig.parse(spec))

    def sample(self, task: Task) -> tuple[np.ndarray, list[int]]:
        """Inputs to trace an untrained model with, and its dynamic axes (the batch)."""
        spec = task.input_spec()
        dtype = np.float32 if spec.datatype == "FP32" else np.int64
        return np.zeros((2, *spec.shape[1:]), dtype=dtype), [0]

    def after_onnx(self, task: Task, model: Any, fp32: Path, sample: np.ndarray, say: Say) -> None:
        """Stage 3's follow-up on the exported FP32 graph (a family that fuses it does so here)."""

    def serving_fp32(self, fp32: Path) -> Path:
        """The FP32 graph the bundle ships."""
        return fp32

    @property
    def quantizer(self) -> Quantizer:
        return quantize_cnn

    def reference_rows(self, rows: int, say: Say) -> int:
        """How many holdout rows customers evaluate by the ONNX specification (onnx.reference)."""
        return rows


class TransformerProfile(ExportProfile):
    """Encoders fine-tuned with LoRA (the text task): see fedge.export.transformer."""

    name = "transformer"
    gated = ("int8_cpu", "int8_trt")  # the TensorRT form too: its symmetric activations are the riskier quantization
    skip_symbolic_shape = True  # an exported BERT fails it on its position-ids slice
    mask_in_model = True  # the trained arrays are adapters and head; the mask lives in the model

    def prune(self, model: Any, spec: str) -> None:
        """Nothing to zero in the stored arrays: the mask is held by the model (``stages.masked``)."""

    def sample(self, task: Task) -> tuple[np.ndarray, list[int]]:
        """Token ids of sample texts, dynamic batch and sequence axes."""
        return task.sample_inputs(), [i for i, n in enumerate(task.input_spec().shape) if n < 0]

    def after_onnx(self, task: Task, model: Any, fp32: Path, sample: np.ndarray, say: Say) -> None:
        from fedge.core.tasks.text import TextTask
        from fedge.export.onnx_export import check_parity
        from fedge.export.transformer import encoder_shape, fuse, fused_operators

        assert isinstance(task, TextTask), f"the transformer profile exports text tasks, not {task.name!r}"
        fused = fuse(fp32, fp32.with_name(FUSED_FP32), *encoder_shape(task.base / "config.json"))
        parity = check_parity(model, fused, sample)
        say(
            f"[bold]fused[/bold] for ONNX Runtime: {fused_operators(fused)}, parity max|diff| {parity.max_abs_diff:.2e}"
        )

    def serving_fp32(self, fp32: Path) -> Path:
        return fp32.with_name(FUSED_FP32)

    @property
    def quantizer(self) -> Quantizer:
        from fedge.export.transformer import quantize_transformer

        return quantize_transformer

    def reference_rows(self, rows: int, say: Say) -> int:
        if rows:  # onnx.reference cannot run the exported encoder (and would take minutes per row on 22 M weights)
            say(
                "[bold]reference[/bold]: not evaluated for a transformer (the CPU variant's 7-bit weights hold the"
                " cross-CPU rule, fedge.export.quantize)"
            )
        return 0


PROFILES: dict[str, ExportProfile] = {p.name: p for p in (ExportProfile(), TransformerProfile())}


def profile_of(task_or_name: Task | str) -> ExportProfile:
    """The export profile of a task (or of a profile's name, as calibration.json records it)."""
    name = task_or_name if isinstance(task_or_name, str) else task_or_name.export_profile
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no export profile {name!r} (known: {sorted(PROFILES)})") from None
