import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


@pytest.fixture(scope="session")
def digits_customers(tmp_path_factory) -> list[Path]:
    """Three non-IID digits customers (Dirichlet alpha=0.5), as the demo makes them."""
    from fedge.cli.demo import write_customer_data

    return write_customer_data(tmp_path_factory.mktemp("customers"), alpha=0.5, seed=0)


def run_fedge(*args: str, timeout: float = 600, env: dict | None = None):
    import subprocess

    from fedge.core.procs import fedge_env

    return subprocess.run(
        [sys.executable, "-m", "fedge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or fedge_env(),
    )
