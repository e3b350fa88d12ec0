"""The registry's schema, as numbered migrations: SQLite's ``user_version`` holds the version a database is at,
and opening it applies the migrations above that, each in one transaction. A migration only adds (tables,
columns with defaults, indexes): no existing row changes. A database from before versions existed (user_version
0) holds migration 1's tables already; 1 creates them only where they are missing.

To add a table (rollouts, fleet health): append a :class:`Migration` with the next version; never edit one that
has shipped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fedge.edge_runtime.common.errors import FedgeUserError


class SchemaTooNew(FedgeUserError):
    """The database was written by a newer fedge: this one does not know its tables."""


@dataclass(frozen=True)
class Migration:
    version: int
    what: str  # one line: what it adds
    sql: str  # statements separated by ';'


V1_BASE = """

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    status TEXT NOT NULL,             -- pending | running | completed | failed
    reason TEXT,
    num_rounds INTEGER NOT NULL,
    config TEXT NOT NULL,             -- JSON: the launch configuration
    flower_runs TEXT NOT NULL DEFAULT '[]',  -- JSON list of Flower run ids (launch, resumes)
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    round INTEGER NOT NULL,
    accuracy REAL,
    loss REAL,
    clients TEXT NOT NULL,            -- JSON list of customer names whose updates were aggregated
    client_metrics TEXT NOT NULL,     -- JSON {customer: {fit/eval metrics}}
    failures TEXT NOT NULL,           -- JSON list of failure descriptions
    refused TEXT NOT NULL DEFAULT '[]',
    privacy TEXT NOT NULL DEFAULT '{}',
    wall_s REAL NOT NULL,
    checkpoint TEXT NOT NULL,
    checkpoint_sha256 TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (run_id, round)
);
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    path TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    summary TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS withdrawn_releases (  -- releases the release service no longer offers
    release_id INTEGER PRIMARY KEY REFERENCES releases(id),
    at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (              -- edge devices as the release service last saw them
    name TEXT PRIMARY KEY,
    authenticated INTEGER NOT NULL,   -- 1: the name is its client certificate's (mutual TLS); 0: as it claims
    address TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    current TEXT NOT NULL             -- JSON [{model, manifest_sha256, local_version, release}]
);
CREATE TABLE IF NOT EXISTS revoked_devices (      -- refused by the release service
    name TEXT PRIMARY KEY,
    at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""

V2_HEALTH = """
CREATE TABLE IF NOT EXISTS health (               -- each device's latest health summary per release (counts only)
    device TEXT NOT NULL,
    release_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    reported REAL NOT NULL,
    signals TEXT NOT NULL,            -- JSON: what fedge.edge_runtime.monitoring.summary.signals computes
    counts TEXT NOT NULL,             -- JSON: the summary's histograms (class, confidence, length)
    PRIMARY KEY (device, release_id)
);
CREATE TABLE IF NOT EXISTS health_history (       -- every accepted summary's headline numbers, for plots
    device TEXT NOT NULL,
    release_id INTEGER NOT NULL,
    reported REAL NOT NULL,
    predictions INTEGER NOT NULL,
    estimated_accuracy REAL,
    production_accuracy REAL,
    drift REAL
);
CREATE INDEX IF NOT EXISTS health_history_release ON health_history (release_id, reported);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, rounds, releases, withdrawn releases, devices, revoked devices", V1_BASE),
    Migration(2, "fleet health: each device's latest summary per release, and their history", V2_HEALTH),
)


def latest(migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def version_of(path: Path) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def migrate(path: Path, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database at ``path`` to the newest version of ``migrations`` -> that version. Several processes
    may open it at once: each migration runs under SQLite's write lock and re-reads the version first."""
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1)), "versions are 1, 2, 3, ..."
    db = sqlite3.connect(path, timeout=30, isolation_level=None)  # transactions are explicit below
    try:
        if int(db.execute("PRAGMA user_version").fetchone()[0]) == latest(migrations):
            return latest(migrations)  # the usual case: one read, no lock
        db.execute("PRAGMA journal_mode=WAL")
        for m in migrations:
            db.execute("BEGIN IMMEDIATE")
            try:
                current = int(db.execute("PRAGMA user_version").fetchone()[0])
                if current > latest(migrations):
                    raise SchemaTooNew(
                        f"{path} is at schema version {current}; this fedge knows versions up to"
                        f" {latest(migrations)}: use the fedge that wrote it, or a newer one"
                    )
                if current < m.version:
                    for statement in _statements(m.sql):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {m.version}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return latest(migrations)
    finally:
        db.close()


def _statements(sql: str) -> list[str]:
    """``sql`` split into whole statements (sqlite3.complete_statement decides where one ends, so a ';' inside a
    string or a comment does not split)."""
    out, buf = [], ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if _code(s)]


def _code(statement: str) -> str:
    """A statement without its comments and the closing ';' (empty for a statement of comments only)."""
    return " ".join(line.split("--", 1)[0] for line in statement.splitlines()).strip().rstrip(";").strip()
