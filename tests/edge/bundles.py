"""Release bundles made in tests (the export pipeline makes the real ones with the same write_bundle)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from server.export.sample_bundle import untrained_bundle as make_bundle  # noqa: F401  (the tests' name for it)


def reference_logits(bundle: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(bundle / "model.fp32.onnx")).run(None, {"input": x})[0]
