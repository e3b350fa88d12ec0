"""Export jobs a customer runs on its own data (federated calibration, the accuracy gate). Each returns only
per-tensor statistics or aggregate counts, never an input, an activation or a label."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_SAMPLES = 256


class _Reader:
    """ONNX Runtime CalibrationDataReader over local samples, in batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # ORT calls this between passes on some versions
        pass


def _samples(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[np.sort(idx)]


def calibration_minmax(model_bytes: bytes, x: np.ndarray) -> dict[str, list[float]]:
    """Per-tensor [min, max] from ONNX Runtime's MinMax calibrator over up to 256 local training samples."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model_bytes)
        cal = create_calibrator(
            str(path), augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        input_name = cal.model.graph.input[0].name
        cal.collect_data(_Reader(input_name, _samples(x, CALIBRATION_SAMPLES)))
        data = cal.compute_data()
    return {
        name: [float(np.asarray(t.range_value[0]).reshape(-1)[0]), float(np.asarray(t.range_value[1]).reshape(-1)[0])]
        for name, t in data.data.items()
    }


def calibration_histograms(
    model_bytes: bytes, x: np.ndarray, edges: dict[str, list[float]], absolute: bool = False
) -> dict[str, list[int]]:
    """Per-tensor counts of x (or |x|) on the coordinator's bin edges (values outside fall into the end bins)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(model_bytes)
    existing = {o.name for o in model.graph.output}
    for name in edges:
        if name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    counts = {n: np.zeros(len(e) - 1, dtype=np.int64) for n, e in edges.items()}
    names = list(edges)
    xs = _samples(x, CALIBRATION_SAMPLES)
    for i in range(0, len(xs), 32):
        for name, value in zip(names, sess.run(names, {input_name: xs[i : i + 32]})):
            e = np.asarray(edges[name], dtype=np.float32)
            v = np.abs(value.reshape(-1)) if absolute else value.reshape(-1)
            counts[name] += np.histogram(np.clip(v, e[0], e[-1]), bins=e)[0]
    return {n: c.tolist() for n, c in counts.items()}


def gate_evaluation(models: dict[str, bytes], x: np.ndarray, y: np.ndarray, reference_rows: int = 0) -> dict:
    """Accuracy of each candidate model on the local holdout, and top-1 agreement with the first (FP32). With
    ``reference_rows``, also how the INT8 candidates' answers on this machine's ONNX Runtime compare with the ONNX
    specification's (onnx.reference) on the first that many holdout rows: an INT8 model whose answers depend on
    the CPU shows here, on the customers' CPUs, before any device gets it."""
    import onnxruntime as ort

    preds, logits = {}, {}
    for kind, blob in models.items():
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = np.concatenate([sess.run(None, {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)])
        preds[kind], logits[kind] = out.argmax(1), out
    ref = next(iter(preds.values()))
    result = {
        "examples": len(y),
        "accuracy": {k: float((p == y).mean()) for k, p in preds.items()},
        "agreement": {k: float((p == ref).mean()) for k, p in preds.items()},
    }
    served = "int8_cpu" if "int8_cpu" in logits else next(iter(logits))
    result["monitoring"] = monitoring_statistics(logits[served], y) | {"kind": served}
    if reference_rows > 0:
        result["reference"] = {
            kind: reference_agreement(models[kind], logits[kind], x, reference_rows) for kind in list(models)[1:]
        }
    return result


def forgetting_evaluation(candidate: bytes, previous: bytes, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """The candidate's and the previous release's accuracy on each part of the holdout (``original``: the first
    data file's; ``added``: the files added beside it, e.g. corrections): counts only."""
    import onnxruntime as ort

    def predict(blob: bytes, x: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[i : i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])

    return {
        part: {
            "examples": len(y),
            "candidate": float((predict(candidate, x) == y).mean()) if len(y) else None,
            "previous": float((predict(previous, x) == y).mean()) if len(y) else None,
        }
        for part, (x, y) in parts.items()
    }


def monitoring_statistics(logits: np.ndarray, y: np.ndarray) -> dict:
    """What the release's drift reference and temperature are made of (fedge.edge_runtime.monitoring.measures), in
    counts and sums over the holdout: per temperature of the shared grid, the summed negative log-likelihood, the
    summed calibrated top-1 confidence and its histogram; the predicted-class histogram; the correct answers."""
    from fedge.edge_runtime.monitoring.measures import (
        CONFIDENCE_BINS,
        TEMPERATURE_GRID,
        confidence_bin,
        softmax,
    )

    rows = np.arange(len(y))
    nll, conf_sum, conf_counts = [], [], []
    for t in TEMPERATURE_GRID:
        p = softmax(logits, t)
        nll.append(float(-np.log(np.clip(p[rows, y], 1e-12, 1.0)).sum()))
        top = p.max(axis=1)
        conf_sum.append(float(top.sum()))
        conf_counts.append(np.bincount(confidence_bin(top), minlength=CONFIDENCE_BINS).tolist())
    return {
        "examples": len(y),
        "correct": int((logits.argmax(1) == y).sum()),
        "class_counts": np.bincount(logits.argmax(1), minlength=logits.shape[1]).tolist(),
        "grid": list(TEMPERATURE_GRID),
        "nll": nll,
        "confidence_sum": conf_sum,
        "confidence_counts": conf_counts,
    }


def reference_agreement(model: bytes, runtime_logits: np.ndarray, x: np.ndarray, rows: int) -> dict:
    """This machine's runtime against the ONNX specification on the first ``rows`` rows: top-1 agreement, the
    largest logit difference, and this CPU's vector-neural-network support (what decides the x86 kernels)."""
    from fedge.core.onnx_reference import reference_outputs

    n = min(rows, len(x))
    try:
        expected = reference_outputs(model, x[:n])
    except Exception as exc:  # an operator onnx.reference does not implement (a custom task's model): say so
        return {
            "rows": 0,
            "agreement": None,
            "max_abs_diff": None,
            "cpu": cpu_flags(),
            "error": f"{type(exc).__name__}: {str(exc)[:200]}",
        }
    got = runtime_logits[:n]
    return {
        "rows": int(n),
        "agreement": float((got.argmax(1) == expected.argmax(1)).mean()) if n else 1.0,
        "max_abs_diff": float(np.abs(got - expected).max()) if n else 0.0,
        "cpu": cpu_flags(),
    }


def cpu_flags() -> str:
    """The CPU's architecture and whether it has VNNI (the x86 integer dot-product instructions)."""
    import platform

    arch = platform.machine()
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"})
    return f"{arch} {'+'.join(vnni) if vnni else 'no VNNI'}" if arch in ("x86_64", "AMD64") else arch
