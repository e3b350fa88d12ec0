"""Writes the Flower App directory (what ``flwr run`` packs into a FAB).

fedge is preinstalled on coordinator and customer hosts (runtime dependency installation is disabled: they may be
air-gapped), so the FAB holds only two shim modules that point at the installed ServerApp and ClientApp.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedge.server.run_config import RunConfig

APP_NAME = "fedge-federation"

# Flower checks components statically (an assignment to ``app``), hence the explicit assignment.
SERVER_SHIM = (
    '"""Points Flower at fedge\'s installed ServerApp."""\n'
    "from fedge import server\nimport fedge.server.server_app\n\napp = server.server_app.app\n"
)
SIM_CLIENT_SHIM = (
    '"""Points Flower at fedge\'s installed simulation ClientApp."""\n'
    "from fedge import client\nimport fedge.client.simulation_app\n\napp = client.simulation_app.app\n"
)
CLIENT_SHIM = (
    '"""Points Flower at fedge\'s installed ClientApp."""\n'
    "from fedge import client\nimport fedge.client.client_app\n\napp = client.client_app.app\n"
)


def write_app(app_dir: Path, simulation: bool = False) -> Path:
    """The app directory; ``simulation``: its ClientApp is the simulation runtime's (virtual customers holding
    partitions of the task's reference data, fedge.client.simulation_app)."""
    import flwr

    app_dir = Path(app_dir)
    pkg = app_dir / "fedge_fab"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "server_app.py").write_text(SERVER_SHIM)
    (pkg / "client_app.py").write_text(SIM_CLIENT_SHIM if simulation else CLIENT_SHIM)
    (app_dir / "LICENSE").write_text("Apache-2.0\n")
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": APP_NAME,
            "version": "1.0.0",
            "license": {"file": "LICENSE"},
            "dependencies": [f"flwr>={flwr.__version__}"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedge",
                    "fab-format-version": 1,
                    "flwr-version-target": flwr.__version__,
                    "components": {"serverapp": "fedge_fab.server_app:app", "clientapp": "fedge_fab.client_app:app"},
                    "config": RunConfig().to_flower(),
                }
            }
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    return app_dir


def write_overrides(path: Path, cfg: RunConfig) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(tomli_w.dumps(cfg.to_flower()))
    return Path(path)
