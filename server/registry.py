"""The coordinator's run registry: an embedded SQLite database in the coordinator's state dir.

Every completed round is one row (metrics, participants, wall time, checkpoint path and sha256). The ServerApp
writes, the operator's CLI reads; WAL mode lets both work at once. The tables and their versions are in
:mod:`fedge.server.registry_schema`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedge.edge_runtime.common.errors import NotFoundError
from fedge.server.registry_schema import migrate


@dataclass(frozen=True)
class RoundRecord:
    round: int
    accuracy: float | None
    loss: float | None
    clients: list[str]
    client_metrics: dict[str, dict[str, Any]]
    failures: list[str]
    wall_s: float
    checkpoint: str
    checkpoint_sha256: str
    refused: list[dict] = field(default_factory=list)
    privacy: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "round": self.round,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "clients": self.clients,
            "client_metrics": self.client_metrics,
            "failures": self.failures,
            "refused": self.refused,
            "wall_s": self.wall_s,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            **({"epsilon": self.privacy.get("epsilon"), "privacy": self.privacy} if self.privacy else {}),
        }


def registry_path(state_dir: Path) -> Path:
    return Path(state_dir) / "registry.db"


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        migrate(self.path)  # the schema at its current version (server/registry_schema.py); rows untouched

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction
                yield db
        finally:
            db.close()

    # -- runs ------------------------------------------------------------------------------------------
    def create_run(self, task: str, num_rounds: int, config: dict) -> int:
        now = time.time()
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO runs (task, status, num_rounds, config, created, updated) VALUES (?, 'pending', ?, ?, ?,"
                " ?)",
                (task, num_rounds, json.dumps(config), now, now),
            )
            return int(cur.lastrowid or 0)

    def set_config(self, run_id: int, config: dict) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET config=?, updated=? WHERE id=?", (json.dumps(config), time.time(), run_id))

    def set_status(self, run_id: int, status: str, reason: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE runs SET status=?, reason=?, updated=? WHERE id=?", (status, reason, time.time(), run_id)
            )

    def add_flower_run(self, run_id: int, flower_run_id: int) -> None:
        with self._db() as db:
            row = db.execute("SELECT flower_runs FROM runs WHERE id=?", (run_id,)).fetchone()
            ids = json.loads(row["flower_runs"]) + [flower_run_id]
            db.execute("UPDATE runs SET flower_runs=?, updated=? WHERE id=?", (json.dumps(ids), time.time(), run_id))

    def run(self, run_id: int) -> dict:
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id} in {self.path}")
        return _run_dict(row)

    def runs(self) -> list[dict]:
        with self._db() as db:
            return [_run_dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id").fetchall()]

    # -- rounds ----------------------------------------------------------------------------------------
    def add_round(self, run_id: int, rec: RoundRecord) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO rounds (run_id, round, accuracy, loss, clients, client_metrics, failures, refused,"
                " privacy,"
                " wall_s, checkpoint, checkpoint_sha256, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    rec.round,
                    rec.accuracy,
                    rec.loss,
                    json.dumps(rec.clients),
                    json.dumps(rec.client_metrics),
                    json.dumps(rec.failures),
                    json.dumps(rec.refused),
                    json.dumps(rec.privacy),
                    rec.wall_s,
                    rec.checkpoint,
                    rec.checkpoint_sha256,
                    time.time(),
                ),
            )
            db.execute("UPDATE runs SET updated=? WHERE id=?", (time.time(), run_id))

    def set_round_eval(self, run_id: int, rnd: int, accuracy: float, loss: float, per_client: dict[str, dict]) -> None:
        """Record the evaluation of round ``rnd``'s global model (it arrives with the next round's replies)."""
        with self._db() as db:
            row = db.execute("SELECT client_metrics FROM rounds WHERE run_id=? AND round=?", (run_id, rnd)).fetchone()
            if row is None:
                return
            metrics = json.loads(row["client_metrics"])
            for name, m in per_client.items():
                metrics.setdefault(name, {}).update(m)
            db.execute(
                "UPDATE rounds SET accuracy=?, loss=?, client_metrics=? WHERE run_id=? AND round=?",
                (accuracy, loss, json.dumps(metrics), run_id, rnd),
            )

    def rounds(self, run_id: int) -> list[RoundRecord]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM rounds WHERE run_id=? ORDER BY round", (run_id,)).fetchall()
        return [
            RoundRecord(
                round=r["round"],
                accuracy=r["accuracy"],
                loss=r["loss"],
                clients=json.loads(r["clients"]),
                client_metrics=json.loads(r["client_metrics"]),
                failures=json.loads(r["failures"]),
                refused=json.loads(r["refused"]),
                privacy=json.loads(r["privacy"]),
                wall_s=r["wall_s"],
                checkpoint=r["checkpoint"],
                checkpoint_sha256=r["checkpoint_sha256"],
            )
            for r in rows
        ]

    def last_round(self, run_id: int) -> RoundRecord | None:
        rounds = self.rounds(run_id)
        return rounds[-1] if rounds else None

    # -- releases --------------------------------------------------------------------------------------
    def add_release(self, run_id: int, rnd: int, path: str, manifest_sha256: str, summary: dict) -> int:
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO releases (run_id, round, path, manifest_sha256, summary, created) VALUES (?,?,?,?,?,?)",
                (run_id, rnd, path, manifest_sha256, json.dumps(summary), time.time()),
            )
            return int(cur.lastrowid or 0)

    def releases(self) -> list[dict]:
        """Every release, oldest first; ``withdrawn`` is when the operator withdrew it (None: offered)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT r.*, w.at AS withdrawn, w.reason AS withdrawn_reason FROM releases r"
                " LEFT JOIN withdrawn_releases w ON w.release_id = r.id ORDER BY r.id"
            ).fetchall()
        return [{**dict(r), "summary": json.loads(r["summary"])} for r in rows]

    def withdraw_release(self, release_id: int, reason: str) -> None:
        with self._db() as db:
            if db.execute("SELECT 1 FROM releases WHERE id=?", (release_id,)).fetchone() is None:
                raise NotFoundError(f"no release {release_id}")
            db.execute(
                "INSERT OR REPLACE INTO withdrawn_releases (release_id, at, reason) VALUES (?,?,?)",
                (release_id, time.time(), reason),
            )

    def restore_release(self, release_id: int) -> bool:
        """Offer a withdrawn release again; False if it was not withdrawn."""
        with self._db() as db:
            return db.execute("DELETE FROM withdrawn_releases WHERE release_id=?", (release_id,)).rowcount > 0

    # -- devices ---------------------------------------------------------------------------------------
    def record_device(self, name: str, authenticated: bool, address: str, current: list[dict] | None) -> None:
        """A call from the device, now; ``current`` (what it serves) None: as it last said."""
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO devices (name, authenticated, address, first_seen, last_seen, current)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET authenticated=excluded.authenticated,"
                " address=excluded.address, last_seen=excluded.last_seen"
                + (", current=excluded.current" if current is not None else ""),
                (name, int(authenticated), address, now, now, json.dumps(current or [])),
            )

    def devices(self) -> list[dict]:
        """Devices seen or revoked, by name; ``revoked`` is when (None: not revoked)."""
        with self._db() as db:
            seen = {
                r["name"]: {**dict(r), "authenticated": bool(r["authenticated"]), "current": json.loads(r["current"])}
                for r in db.execute("SELECT * FROM devices")
            }
            revoked = {r["name"]: dict(r) for r in db.execute("SELECT * FROM revoked_devices")}
        out = []
        for name in sorted(seen.keys() | revoked.keys()):
            d = seen.get(name) or {
                "name": name,
                "authenticated": None,
                "address": None,
                "first_seen": None,
                "last_seen": None,
                "current": [],
            }
            r = revoked.get(name)
            out.append({**d, "revoked": r["at"] if r else None, "revoked_reason": r["reason"] if r else None})
        return out

    def revoke_device(self, name: str, reason: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO revoked_devices (name, at, reason) VALUES (?,?,?)", (name, time.time(), reason)
            )

    def restore_device(self, name: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM revoked_devices WHERE name=?", (name,)).rowcount > 0

    def revocation(self, name: str) -> dict | None:
        """``{"at", "reason"}`` if the device is revoked."""
        with self._db() as db:
            row = db.execute("SELECT at, reason FROM revoked_devices WHERE name=?", (name,)).fetchone()
        return dict(row) if row else None

    # -- fleet health ----------------------------------------------------------------------------------
    def record_health(self, device: str, reports: list[dict]) -> None:
        """A device's accepted health summaries: ``{"release", "model", "signals", "counts"}`` each."""
        now = time.time()
        with self._db() as db:
            for r in reports:
                sig = r["signals"]
                db.execute(
                    "INSERT OR REPLACE INTO health (device, release_id, model, reported, signals, counts)"
                    " VALUES (?,?,?,?,?,?)",
                    (device, r["release"], r["model"], now, json.dumps(sig), json.dumps(r["counts"])),
                )
                db.execute(
                    "INSERT INTO health_history VALUES (?,?,?,?,?,?,?)",
                    (
                        device,
                        r["release"],
                        now,
                        sig["predictions"],
                        sig["estimated_accuracy"],
                        sig["production_accuracy"],
                        sig["drift"],
                    ),
                )

    def health(self) -> list[dict]:
        """Every device's latest summary per release."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM health ORDER BY release_id, device").fetchall()
        return [{**dict(r), "signals": json.loads(r["signals"]), "counts": json.loads(r["counts"])} for r in rows]

    def health_history(self) -> list[dict]:
        with self._db() as db:
            return [dict(r) for r in db.execute("SELECT * FROM health_history ORDER BY reported")]


def _run_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["flower_runs"] = json.loads(d["flower_runs"])
    return d
