"""Federated INT8 calibration, the pure part: merging what customers send (per-tensor min/max, or histograms
on bin edges the coordinator fixed first) and turning the merged statistics into ranges with ONNX Runtime's own
calibration math. Clients compute their statistics with ONNX Runtime's calibrator (client/jobs.py); no input
ever leaves a customer."""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "entropy", "percentile")


def merge_minmax(parts: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Union of ranges: the global min of mins and max of maxes, per tensor (tensors every client reported)."""
    if not parts:
        raise ValueError("no calibration statistics to merge")
    names = set(parts[0]).intersection(*parts[1:])
    return {n: (min(float(p[n][0]) for p in parts), max(float(p[n][1]) for p in parts)) for n in sorted(names)}


def uses_abs(method: str) -> bool:
    """ONNX Runtime's symmetric percentile works on a histogram of |x| over [0, max|x|]; its entropy search on a
    histogram of x centred on zero over [-max|x|, max|x|]."""
    return method == "percentile"


def histogram_edges(ranges: dict[str, tuple[float, float]], bins: int, method: str) -> dict[str, np.ndarray]:
    """Bin edges fixed by the coordinator, so the customers' histograms can simply be added."""
    edges = {}
    for name, (lo, hi) in ranges.items():
        m = max(abs(lo), abs(hi), 1e-8)
        edges[name] = np.linspace(0.0 if uses_abs(method) else -m, m, bins + 1, dtype=np.float32)
    return edges


def merge_histograms(parts: list[dict[str, list[int]]]) -> dict[str, np.ndarray]:
    names = set(parts[0]).intersection(*parts[1:])
    return {n: np.sum([np.asarray(p[n], dtype=np.int64) for p in parts], axis=0) for n in sorted(names)}


def ranges_from_histograms(
    hists: dict[str, np.ndarray],
    edges: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
    method: str,
    percentile: float = 99.999,
    num_quantized_bins: int = 128,
) -> dict[str, tuple[float, float]]:
    """Thresholds from merged histograms, computed by ONNX Runtime's HistogramCollector (entropy or percentile)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(
        method=method,
        symmetric=True,
        num_bins=len(next(iter(edges.values()))) - 1,
        num_quantized_bins=num_quantized_bins,
        percentile=percentile,
        scenario="same",
    )
    collector.histogram_dict = {
        n: (hists[n].astype(np.int64), edges[n], np.float32(ranges[n][0]), np.float32(ranges[n][1])) for n in hists
    }
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress; keep stdout for --json
        out = collector.compute_collection_result()
    return {n: (float(np.asarray(v[0]).reshape(-1)[0]), float(np.asarray(v[1]).reshape(-1)[0])) for n, v in out.items()}


def write_cache(path, ranges: dict[str, tuple[float, float]], method: str):
    """The calibration cache quantize_static reads instead of calibrating itself."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    cm = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    data = {n: (np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32)) for n, (lo, hi) in ranges.items()}
    if cm != CalibrationMethod.MinMax:  # TensorsData takes 2-tuples only for MinMax
        from onnxruntime.quantization.calibrate import TensorData

        data = {n: TensorData(lowest=lo, highest=hi) for n, (lo, hi) in data.items()}
    save_tensors_data(TensorsData(cm, data), path)
    return cm
