import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("FEDGE_SYSTEM_REPORT", Path(__file__).parent / ".last-run.json"))


@pytest.fixture(scope="session")
def report():
    """Figures each scenario measured (requests, failures, memory growth, cases), for docs/RELIABILITY.md."""
    figures: dict = {}
    yield figures
    old = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    REPORT.write_text(json.dumps({**old, **figures}, indent=2) + "\n")


from tests.edge.conftest import digits_bundle, edge_server, intent_bundle, keys  # noqa: E402,F401  (shared fixtures)
