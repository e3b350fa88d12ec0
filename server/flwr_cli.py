"""Talking to the SuperLink's Control API through Flower's own CLI (``flwr run/ls/stop/supernode``), with a
connection profile kept in the coordinator's state dir so nothing touches the operator's ``~/.flwr``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomli_w

from fedge.core.procs import fedge_env
from fedge.edge_runtime.common.errors import FedgeUserError
from fedge.server.coordinator import CoordinatorInfo, load_info

CONNECTION = "fedge"


class FlowerError(FedgeUserError, RuntimeError):
    pass


class FlowerCLI:
    def __init__(self, state: Path, info: CoordinatorInfo | None = None) -> None:
        self.state = Path(state).resolve()
        self.info = info or load_info(self.state)
        self.home = self.state / "flwr-cli"
        self.home.mkdir(parents=True, exist_ok=True)
        host, _, port = self.info.address.rpartition(":")
        dial = f"127.0.0.1:{port}" if host in ("0.0.0.0", "::", "") else self.info.address
        conn: dict = {"address": dial}
        if self.info.insecure:
            conn["insecure"] = True
        else:
            conn["root-certificates"] = str(self.info.ca.resolve())
        (self.home / "config.toml").write_text(tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: conn}}))

    def _flwr(self, *args: str, timeout: float = 120) -> str:
        exe = str(Path(sys.executable).parent / "flwr")
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=timeout, env=fedge_env(self.home), cwd=self.state
        )
        if proc.returncode != 0:
            raise FlowerError(
                f"flwr {' '.join(args[:2])} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        return proc.stdout

    def _json(self, *args: str) -> dict:
        out = self._flwr(*args, "--format", "json")
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise FlowerError(f"flwr {args[0]} returned non-JSON output: {out[-500:]}") from exc
        if not doc.get("success", True):
            raise FlowerError(f"flwr {args[0]}: {doc.get('error-message', doc)}")
        return doc

    def run(self, app_dir: Path, overrides: Path, federation_config: str = "") -> int:
        """Submit a run of the app; ``federation_config``: the simulation runtime's settings (``num-supernodes=N
        client-resources-num-cpus=C``), for a SuperLink started with ``--simulation``."""
        extra = ["--federation-config", federation_config] if federation_config else []
        doc = self._json("run", str(app_dir), CONNECTION, "--run-config", str(overrides), *extra)
        return int(doc["run-id"])

    def runs(self) -> list[dict]:
        return self._json("ls", CONNECTION).get("runs", [])

    def run_status(self, flower_run_id: int) -> str:
        for r in self._json("ls", CONNECTION, "--run-id", str(flower_run_id)).get("runs", []):
            return str(r.get("status", ""))
        return ""

    def stop(self, flower_run_id: int) -> None:
        self._flwr("stop", str(flower_run_id), CONNECTION)

    def register(self, public_key: Path, name: str | None = None) -> dict:
        args = ["supernode", "register", str(Path(public_key).resolve()), CONNECTION]
        if name:
            args += ["--name", name]
        return self._json(*args)

    def nodes(self) -> list[dict]:
        return self._json("supernode", "list", CONNECTION).get("nodes", [])
