"""Test-only plugins loaded into the processes that tests start, never part of the product."""

from __future__ import annotations

import os
from pathlib import Path

CLIENT_MODS = Path(__file__).resolve().parent / "client_mods"


def client_mods_env(fault: str = "", record: Path | None = None) -> dict[str, str]:
    """The environment of a daemon whose ClientApp also runs the test mod (tests/plugins/client_mods): ``fault``
    alters its updates (``flip:K``, ``scale:K``, ``nan``), ``record`` writes each update, unmasked, to that dir."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(CLIENT_MODS), os.environ.get("PYTHONPATH", "")) if p)}
    if fault:
        env["FEDGE_TEST_FAULT"] = fault
    if record is not None:
        env["FEDGE_TEST_RECORD"] = str(record)
    return env
