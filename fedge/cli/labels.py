"""``--labels FILE|A,B,C``: the run's label catalogue as the operator gives it."""
from __future__ import annotations

from pathlib import Path


def read_labels(arg: str) -> tuple[str, ...]:
    """A file with one label per line (blank lines and ``#`` comments skipped), or labels separated by commas.
    Raises ValueError for a catalogue with fewer than two labels or a label given twice (naming the line)."""
    path = Path(arg)
    if path.is_file():
        rows = [(i, line.strip()) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
        entries = [(f"{path}: line {i}", label) for i, label in rows if label and not label.startswith("#")]
    elif "," in arg or not any(sep in arg for sep in ("/", "\\")) and not arg.endswith(".txt"):
        entries = [(f"--labels item {i}", label.strip()) for i, label in enumerate(arg.split(","), start=1)]
    else:
        raise ValueError(f"--labels {arg}: no such file")
    seen: dict[str, str] = {}
    for where, label in entries:
        if not label:
            raise ValueError(f"{where}: empty label")
        if label in seen:
            raise ValueError(f"{where}: label {label!r} given twice (first at {seen[label]})")
        seen[label] = where
    if len(seen) < 2:
        raise ValueError(f"--labels {arg}: a catalogue needs at least two labels, got {list(seen)}")
    return tuple(seen)
