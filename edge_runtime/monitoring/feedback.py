"""The device's feedback store (``fedge edge serve --feedback-store DIR --keep-inputs 7d``): a local SQLite file that
never leaves the premises. It keeps the input of each single-row answered request for ``keep_s`` seconds, so that
a correction naming the request's id can be matched to what was asked and what was answered, and it keeps the
corrections themselves, which ``fedge edge feedback export`` writes out as training rows in the customer data
format.

Bounded in rows, bytes and age: past ``max_answers`` kept inputs or ``max_corrections`` corrections, or past
``max_bytes`` of kept inputs, the oldest are dropped (and counted); an input over MAX_INPUT_BYTES is not kept at
all; SQLite's write-ahead log is truncated back to JOURNAL_LIMIT after each checkpoint. An input older than
``keep_s`` is forgotten (its id stays, without the input, for another
``keep_s``, so that a late correction is told "expired" rather than "unknown"). Requests of several rows are not
kept: a correction names one answer.

    >>> store = FeedbackStore(Path("feedback"), keep_s=7 * 86400)
    >>> store.keep("intent", 3, "req-1", text="my card is gone", served="lost_card")
    >>> store.correct("intent", "card_arrival", request_id="req-1")
    Correction(matched=True, served='lost_card', version=3, correct=False)
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError, FedgeUserError, FeedbackNotFound

STORE_FILE = "feedback.sqlite"
MAX_INPUT_BYTES = 64 << 10  # a larger input (text or tensor row) is answered but not kept
JOURNAL_LIMIT = 4 << 20
PRUNE_EVERY = 256
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    request_id TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL,
    text TEXT, input BLOB, served TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, request_id)
);
CREATE INDEX IF NOT EXISTS answers_at ON answers (at);
CREATE INDEX IF NOT EXISTS answers_text ON answers (model, text);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version INTEGER, at REAL NOT NULL,
    request_id TEXT, text TEXT, input BLOB, label TEXT NOT NULL, served TEXT, correct INTEGER
);
CREATE TABLE IF NOT EXISTS dropped (what TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Correction:
    matched: bool  # matched to an answer the device gave
    served: str  # what it answered ("" if not matched)
    version: int  # the version that answered (0 if not matched)
    correct: bool  # the served answer was the right one


class FeedbackStore:
    def __init__(
        self,
        root: Path,
        keep_s: float,
        max_answers: int = 200_000,
        max_corrections: int = 100_000,
        max_bytes: int = 256 << 20,
    ) -> None:
        if keep_s <= 0 or max_answers < 1 or max_corrections < 1:
            raise ConfigError("the feedback store keeps inputs > 0 s, and at least one answer and one correction")
        self.root, self.keep_s = Path(root), float(keep_s)
        self.max_answers, self.max_corrections, self.max_bytes = max_answers, max_corrections, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / STORE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT}")
        self._db.executescript(SCHEMA)
        self._since_prune = 0

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- answers, kept for their corrections -------------------------------------------------------------------
    def keep(
        self,
        model: str,
        version: int,
        request_id: str,
        served: str,
        text: str | None = None,
        array: np.ndarray | None = None,
        now: float | None = None,
    ) -> None:
        """Keep one answered request's input (a text, or a tensor model's input row) under its id."""
        now = time.time() if now is None else now
        blob = _npy(array) if array is not None else None
        if len(blob or b"") + len((text or "").encode()) > MAX_INPUT_BYTES:
            self._count_drop("answers_too_large", 1)
            return
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (request_id, model, version, at, text, input, served, expired)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (request_id, model, version, now, text, blob, served),
            )
        self._after_write(now)

    def _after_write(self, now: float) -> None:
        """Every PRUNE_EVERY writes the caps are enforced: between two, a store holds at most that many more."""
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune(now)

    def keep_many(self, rows: list[tuple[str, int, str, str, str | None, np.ndarray | None]]) -> None:
        """:meth:`keep` for many answers in one transaction: (model, version, request id, served label, text,
        array) each."""
        now = time.time()
        kept = []
        for model, version, request_id, served, text, array in rows:
            blob = _npy(array) if array is not None else None
            if len(blob or b"") + len((text or "").encode()) > MAX_INPUT_BYTES:
                self._count_drop("answers_too_large", 1)
                continue
            kept.append((request_id, model, version, now, text, blob, served))
        if kept:
            with self._tx() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO answers (request_id, model, version, at, text, input, served, expired)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                    kept,
                )
            self._since_prune += len(kept) - 1
            self._after_write(now)

    def prune(self, now: float | None = None) -> None:
        """Forget inputs older than ``keep_s`` (their ids stay ``keep_s`` longer, as expired), then drop the oldest
        rows beyond the caps, counting what was dropped."""
        now = time.time() if now is None else now
        self._since_prune = 0
        with self._tx() as db:
            db.execute(
                "UPDATE answers SET text = NULL, input = NULL, expired = 1 WHERE at < ? AND expired = 0",
                (now - self.keep_s,),
            )
            db.execute("DELETE FROM answers WHERE at < ?", (now - 2 * self.keep_s,))
            for table, cap in (("answers", self.max_answers), ("corrections", self.max_corrections)):
                over = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] - cap
                if over > 0:
                    key = "request_id" if table == "answers" else "id"
                    db.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY at, {key} LIMIT ?)",
                        (over,),
                    )
                    _drop_count(db, table, over)
            kept = db.execute("SELECT COALESCE(SUM(LENGTH(text)), 0) + COALESCE(SUM(LENGTH(input)), 0) FROM answers")
            over_bytes = kept.fetchone()[0] - self.max_bytes
            if over_bytes > 0:  # the oldest inputs go, a tenth of the rows at a time, until the rest fits
                n = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
                while over_bytes > 0 and n > 0:
                    step = max(1, n // 10)
                    db.execute(
                        "DELETE FROM answers WHERE rowid IN (SELECT rowid FROM answers ORDER BY at LIMIT ?)", (step,)
                    )
                    _drop_count(db, "answers", step)
                    n -= step
                    over_bytes = (
                        db.execute(
                            "SELECT COALESCE(SUM(LENGTH(text)), 0) + COALESCE(SUM(LENGTH(input)), 0) FROM answers"
                        ).fetchone()[0]
                        - self.max_bytes
                    )

    def _count_drop(self, what: str, n: int) -> None:
        with self._tx() as db:
            _drop_count(db, what, n)

    # -- corrections -------------------------------------------------------------------------------------------
    def correct(
        self, model: str, label: str, request_id: str = "", text: str = "", now: float | None = None
    ) -> Correction:
        """Record that ``label`` is the right answer to request ``request_id`` (or, for a text model, to ``text``).
        A request id the store does not hold raises FeedbackNotFound, saying whether it is unknown or expired."""
        now = time.time() if now is None else now
        found = None
        with self._lock:
            if request_id:
                found = self._db.execute(
                    "SELECT version, at, text, input, served, expired FROM answers WHERE model = ? AND request_id = ?",
                    (model, request_id),
                ).fetchone()
                if found is None:
                    raise FeedbackNotFound(f"unknown request id {request_id!r} for model {model!r}: no answer kept")
                if found[5] or found[1] < now - self.keep_s:
                    raise FeedbackNotFound(
                        f"expired request id {request_id!r}: its input was kept {self.keep_s:.0f} s (--keep-inputs)"
                    )
            elif text:
                found = self._db.execute(
                    "SELECT version, at, text, input, served, expired FROM answers"
                    " WHERE model = ? AND text = ? AND expired = 0 ORDER BY at DESC LIMIT 1",
                    (model, text),
                ).fetchone()
        version, kept_text, blob, served = (found[0], found[2], found[3], found[4]) if found else (None, text, None, "")
        result = Correction(found is not None, served, int(version or 0), found is not None and served == label)
        with self._tx() as db:
            db.execute(
                "INSERT INTO corrections (model, version, at, request_id, text, input, label, served, correct)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    version,
                    now,
                    request_id or None,
                    kept_text or text or None,
                    blob,
                    label,
                    served or None,
                    int(result.correct) if found else None,
                ),
            )
        self._after_write(now)
        return result

    def dropped(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT what, count FROM dropped").fetchall())

    def counts(self) -> dict[str, int]:
        with self._lock:
            answers = self._db.execute("SELECT COUNT(*) FROM answers WHERE expired = 0").fetchone()[0]
            corrections = self._db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]
        return {
            "answers": answers,
            "corrections": corrections,
            **{f"dropped_{k}": v for k, v in self.dropped().items()},
        }

    # -- training rows -----------------------------------------------------------------------------------------
    def corrections(self, model: str = "") -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model, version, at, request_id, text, input, label, served, correct FROM corrections"
                + (" WHERE model = ?" if model else "")
                + " ORDER BY id",
                (model,) if model else (),
            ).fetchall()
        keys = ("model", "version", "at", "request_id", "text", "input", "label", "served", "correct")
        return [dict(zip(keys, row)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def export_corrections(store: FeedbackStore, out: Path, model: str = "") -> int:
    """The corrections as training rows in the customer data format -> rows written: ``.csv`` (text,label) for
    text models; ``.npz`` (x, y as label strings in ``labels``) for tensor models. Corrections without an input
    (an expired id is refused, so these are none today) are skipped."""
    rows = store.corrections(model)
    out = Path(out)
    if out.suffix == ".npz":
        kept = [r for r in rows if r["input"] is not None]
        if not kept:
            raise FedgeUserError(f"no corrections with a kept tensor input in {store.path}")
        x = np.stack([np.load(io.BytesIO(r["input"]), allow_pickle=False) for r in kept])
        np.savez(out, x=x, labels=np.array([r["label"] for r in kept]))
        return len(kept)
    if out.suffix != ".csv":
        raise ConfigError(f"write corrections to a .csv (text models) or an .npz (tensor models), not {out.name!r}")
    kept = [r for r in rows if r["text"]]
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for r in kept:
            w.writerow([r["text"], r["label"]])
    return len(kept)


def _drop_count(db: sqlite3.Connection, what: str, n: int) -> None:
    db.execute("INSERT INTO dropped VALUES (?, ?) ON CONFLICT(what) DO UPDATE SET count = count + ?", (what, n, n))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()
