"""Test hooks stay in tests: no product module reads an environment switch that records or alters what a customer
sends (the test-only mods live in tests/plugins and are loaded only into daemons that tests start), and the
plugin works: fedge's ClientApp wrapped with it keeps its own mods, in order, with the test mod innermost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.plugins import CLIENT_MODS, client_mods_env

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ["fedge", "server", "client", "edge_runtime", "proto"]


def test_no_product_module_has_a_recording_or_fault_switch() -> None:
    switches = ("FEDGE_RECORD", "FEDGE_FAULT", "FEDGE_TEST_")
    hits = [
        f"{p.relative_to(ROOT)}: {word}"
        for folder in PRODUCT
        for p in (ROOT / folder).rglob("*.py")
        for word in switches
        if word in p.read_text()
    ]
    writes = [str(p.relative_to(ROOT)) for p in (ROOT / "client").rglob("*.py") if "savez" in p.read_text()]
    assert hits == [] and writes == []


def test_the_plugin_wraps_the_client_app_only_where_loaded() -> None:
    code = "import fedge.client.client_app as m; print([getattr(f, '__name__', '?') for f in m.app._mods])"
    plain = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    wrapped = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, **client_mods_env()},
    )
    mods = ["egress_audit", "export_jobs", "secagg_when_requested", "clipping_when_requested"]
    assert plain.stdout.strip() == str(mods)
    assert wrapped.stdout.strip() == str([*mods, "fault_and_record"])


def test_faults_as_the_poisoning_suite_uses_them() -> None:
    sys.path.insert(0, str(CLIENT_MODS))
    try:
        from client_mods_impl import faulty
    finally:
        sys.path.remove(str(CLIENT_MODS))
    g, u = [np.ones(3, np.float32)], [np.full(3, 2.0, np.float32)]
    np.testing.assert_allclose(faulty(u, g, "flip:10")[0], [-9, -9, -9])  # global - 10 * update
    np.testing.assert_allclose(faulty(u, g, "scale:3")[0], [4, 4, 4])
    assert np.isnan(faulty(u, g, "nan")[0]).all()
