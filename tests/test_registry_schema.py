"""The registry carries a schema version and migrates by numbered steps: a database from before versions existed
is adopted as it is, a new migration adds its table and changes no existing row, and a database written by a
newer fedge is refused with a clear error."""

from __future__ import annotations

import sqlite3

import pytest

from fedge.server.registry import Registry, RoundRecord
from fedge.server.registry_schema import MIGRATIONS, V1_BASE, Migration, SchemaTooNew, latest, migrate, version_of


def _dump(path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        db.close()


def _filled(path) -> Registry:
    reg = Registry(path)
    run = reg.create_run("digits", 2, {"task": "digits"})
    reg.add_round(run, RoundRecord(1, 0.9, 0.3, ["a"], {"a": {"n": 1}}, ["node 3: no reply"], 1.5, "c", "ab"))
    reg.add_release(run, 1, "/bundles/1", "cd", {"gate": {}})
    reg.withdraw_release(1, "bad")
    reg.record_device("cam-1", True, "ipv4:1.2.3.4:5", [{"model": "digits", "release": 1}])
    reg.revoke_device("cam-2", "stolen")
    return reg


def test_a_database_from_before_versions_is_adopted_unchanged(tmp_path) -> None:
    path = tmp_path / "registry.db"
    db = sqlite3.connect(path)
    db.executescript(V1_BASE)  # what every registry.db held before the version existed (user_version 0)
    db.execute(
        "INSERT INTO runs (task, status, num_rounds, config, created, updated) VALUES"
        " ('digits', 'completed', 1, '{}', 1.0, 2.0)"
    )
    db.commit()
    db.close()
    before = _dump(path)
    assert version_of(path) == 0
    assert Registry(path).run(1)["status"] == "completed"
    after = _dump(path)
    assert version_of(path) == latest() and {k: after[k] for k in before} == before
    assert all(rows == [] for table, rows in after.items() if table not in before)  # later migrations: new, empty


def test_a_new_migration_adds_and_changes_no_existing_row(tmp_path) -> None:
    path = tmp_path / "registry.db"
    _filled(path)
    before = _dump(path)
    rollouts = Migration(
        latest() + 1,
        "rollouts",
        """
        CREATE TABLE rollouts (release_id INTEGER PRIMARY KEY REFERENCES releases(id), stage INTEGER NOT NULL);
        ALTER TABLE devices ADD COLUMN cohort INTEGER NOT NULL DEFAULT 0;
    """,
    )
    assert migrate(path, (*MIGRATIONS, rollouts)) == latest() + 1
    after = _dump(path)
    assert after["rollouts"] == [] and version_of(path) == latest() + 1
    assert {t: rows for t, rows in after.items() if t not in ("rollouts", "devices")} == {
        t: rows for t, rows in before.items() if t != "devices"
    }
    assert [row[:-1] for row in after["devices"]] == before["devices"]  # the old columns as they were
    assert migrate(path, (*MIGRATIONS, rollouts)) == latest() + 1  # applied once


def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path) -> None:
    path = tmp_path / "registry.db"
    _filled(path)
    before = _dump(path)
    broken = Migration(latest() + 1, "broken", "CREATE TABLE t (x INTEGER); ALTER TABLE nowhere ADD COLUMN y;")
    with pytest.raises(sqlite3.OperationalError):
        migrate(path, (*MIGRATIONS, broken))
    assert _dump(path) == before and version_of(path) == latest()


def test_a_database_from_a_newer_fedge_is_refused(tmp_path) -> None:
    path = tmp_path / "registry.db"
    _filled(path)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {latest() + 5}")
    db.close()
    with pytest.raises(SchemaTooNew, match="schema version"):
        Registry(path)
