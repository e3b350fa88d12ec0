"""Loading and validating a customer's private data files. Bad data fails here, naming file and row,
before any training starts."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError


class DataError(ConfigError):
    """A data file that cannot be used. ``row`` is a 1-based line number for text files, a sample index for arrays."""

    def __init__(self, path: Path | str, message: str, row: int | None = None) -> None:
        self.path, self.row = str(path), row
        where = f"{path}" if row is None else f"{path}: row {row}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, ...) model inputs
    y: np.ndarray  # (N,) int64 class ids

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], self.y[idx])


def concat(parts: list[Dataset], pad: int = 0) -> Dataset:
    """One dataset of ``parts`` (several data files of one customer); token-id rows of different widths are
    right-padded with ``pad`` to the widest."""
    if len(parts) == 1:
        return parts[0]
    xs = [p.x for p in parts]
    if all(x.ndim == 2 for x in xs) and len({x.shape[1] for x in xs}) > 1:
        width = max(x.shape[1] for x in xs)
        xs = [np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad) for x in xs]
    return Dataset(np.concatenate(xs), np.concatenate([p.y for p in parts]))


def split_holdout(ds: Dataset, fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Deterministic (train, holdout) split: the same file always gives the same holdout."""
    order = np.random.default_rng(seed).permutation(len(ds))
    n_hold = max(1, round(len(ds) * fraction)) if len(ds) > 1 else 0
    return ds.take(np.sort(order[n_hold:])), ds.take(np.sort(order[:n_hold]))


def load_npz(path: Path, sample_shape: tuple[int, ...], num_classes: int, value_range=(0.0, 1.0)) -> Dataset:
    """``.npz`` with ``x`` (N, *sample_shape) float32 and ``y`` (N,) int64."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as exc:  # zipfile/pickle errors: not an npz at all
        raise DataError(path, f"not a readable .npz file ({exc})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(path, f"missing array {key!r} (found {sorted(arrays)})")
    x, y = arrays["x"], arrays["y"]
    if len(y) == 0 or len(x) == 0:
        raise DataError(path, "file holds no samples")
    if x.dtype != np.float32:
        raise DataError(path, f"x has dtype {x.dtype}, expected float32")
    if y.dtype != np.int64:
        raise DataError(path, f"y has dtype {y.dtype}, expected int64")
    if x.ndim != 1 + len(sample_shape) or tuple(x.shape[1:]) != sample_shape:
        raise DataError(path, f"x has shape {x.shape}, expected (N, {', '.join(map(str, sample_shape))})")
    if y.shape != (len(x),):
        raise DataError(path, f"y has shape {y.shape}, expected ({len(x)},) to match x")
    lo, hi = value_range
    flat = x.reshape(len(x), -1)
    bad = ~np.isfinite(flat).all(axis=1) | (flat < lo).any(axis=1) | (flat > hi).any(axis=1)
    if bad.any():
        raise DataError(path, f"x values must be finite and in [{lo}, {hi}]", row=int(np.argmax(bad)))
    bad_y = (y < 0) | (y >= num_classes)
    if bad_y.any():
        i = int(np.argmax(bad_y))
        raise DataError(path, f"unknown label {int(y[i])} (expected 0..{num_classes - 1})", row=i)
    return Dataset(x, y)


def label_ids(records: list[tuple[int, str, str]], labels: tuple[str, ...], path: Path | str) -> np.ndarray:
    """Each record's label as its index in ``labels`` (the task's or the run's catalogue); a label outside it or
    an empty text raises DataError naming file and row."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.empty(len(records), dtype=np.int64)
    for i, (lineno, text, label) in enumerate(records):
        if label not in index:
            raise DataError(path, f"unknown label {label!r} (the catalogue: {list(labels)})", row=lineno)
        if not text.strip():
            raise DataError(path, "empty text", row=lineno)
        y[i] = index[label]
    return y


def read_text_records(path: Path) -> list[tuple[int, str, str]]:
    """``.csv`` (header with text,label) or ``.jsonl`` -> [(line number, text, label)]."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", row=line) from None
    if not content.strip():
        raise DataError(path, "file is empty")
    if path.suffix == ".jsonl":
        return _jsonl_records(path, content)
    if path.suffix == ".csv":
        return _csv_records(path, content)
    raise DataError(path, f"unsupported extension {path.suffix!r} (expected .csv or .jsonl)")


def _csv_records(path: Path, content: str) -> list[tuple[int, str, str]]:
    reader = csv.reader(content.splitlines())
    header = [h.strip() for h in next(reader)]
    missing = [c for c in ("text", "label") if c not in header]
    if missing:
        raise DataError(path, f"missing column(s) {missing} in header {header}", row=1)
    ti, li = header.index("text"), header.index("label")
    out = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(path, f"expected {len(header)} fields, found {len(row)}", row=lineno)
        out.append((lineno, row[ti], row[li].strip()))
    if not out:
        raise DataError(path, "file has a header but no rows")
    return out


def _jsonl_records(path: Path, content: str) -> list[tuple[int, str, str]]:
    out = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON ({exc.msg})", row=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(path, "each line must be a JSON object", row=lineno)
        for key in ("text", "label"):
            if key not in obj:
                raise DataError(path, f"missing field {key!r}", row=lineno)
        if not isinstance(obj["text"], str):
            raise DataError(path, "field 'text' must be a string", row=lineno)
        out.append((lineno, obj["text"], str(obj["label"]).strip()))
    if not out:
        raise DataError(path, "file holds no records")
    return out
