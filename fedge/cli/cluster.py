"""A whole federation on one host, as separate real processes: the demo and the end-to-end tests use this.

Every process is started with ``python -m fedge.cli ...`` in its own process group and stopped by PID.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedge.core.procs import fedge_env, free_port, spawn, stop_pid, wait_port


def fedge_cmd(*args: str, python: str | None = None) -> list[str]:
    """``python -m fedge.cli ARGS``, by default with this interpreter."""
    return [python or sys.executable, "-m", "fedge.cli", *args]


@dataclass
class LocalFederation:
    root: Path
    secure: bool = True
    release_client_auth: bool = False  # the release service admits only devices with a CA-signed certificate
    port: int = field(default_factory=free_port)
    release_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # the address customers dial (and the coordinator certificate names)
    netns: str | None = None  # network namespace the coordinator runs in (None: this one)
    coordinator: subprocess.Popen | None = None
    clients: dict[str, subprocess.Popen] = field(default_factory=dict)
    registered: set[str] = field(default_factory=set)  # keys registered with the coordinator (a restart keeps them)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def release_address(self) -> str:
        return f"{self.host}:{self.release_port}"

    def command(self, *args: str, netns: str | None = None) -> list[str]:
        """``fedge ARGS``, run inside network namespace ``netns`` when given (``ip netns exec`` execs in place,
        so the PID is the fedge process's own)."""
        return (["ip", "netns", "exec", netns] if netns else []) + fedge_cmd(*args)

    @property
    def state(self) -> Path:
        return self.root / "coordinator"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    def start_coordinator(self, timeout: float = 60.0) -> subprocess.Popen:
        from fedge.server.certs import init_certs
        from fedge.server.coordinator import info_path

        if self.secure and not (self.certs / "ca.crt").exists():
            init_certs(self.certs, hosts=[self.host])
        info_path(self.state).unlink(missing_ok=True)
        args = [
            "coordinator",
            "start",
            "--address",
            self.address,
            "--state",
            str(self.state),
            "--release-address",
            self.release_address,
        ]
        args += ["--certs", str(self.certs)] if self.secure else ["--insecure"]
        args += ["--release-client-auth"] if self.release_client_auth else []
        self.coordinator = spawn(
            self.command(*args, netns=self.netns), self.root / "logs" / "coordinator.out", env=fedge_env()
        )
        if self.netns is None:  # from another namespace the port cannot be probed; coordinator.json says ready
            wait_port(self.host, self.port, timeout=timeout, proc=self.coordinator)
        deadline = time.monotonic() + timeout
        while not info_path(self.state).exists():
            if time.monotonic() > deadline or self.coordinator.poll() is not None:
                raise RuntimeError(f"coordinator did not start; see {self.root / 'logs'}")
            time.sleep(0.1)
        return self.coordinator

    def client_bundle(self, name: str, register: bool = True) -> Path:
        from fedge.server.certs import CertPaths, make_client_bundle
        from fedge.server.flwr_cli import FlowerCLI

        bundle = CertPaths(self.certs).client_dir(name)
        if not (bundle / "supernode.key").exists():
            make_client_bundle(CertPaths(self.certs), name)
        register = register and name not in self.registered
        if register and self.netns:  # the Control API is reachable only inside the coordinator's namespace
            subprocess.run(
                self.command(
                    "coordinator",
                    "register",
                    str(bundle / "supernode.key.pub"),
                    "--name",
                    name,
                    "--state",
                    str(self.state),
                    netns=self.netns,
                ),
                check=True,
                capture_output=True,
                env=fedge_env(),
                timeout=120,
            )
        elif register:
            FlowerCLI(self.state).register(bundle / "supernode.key.pub", name)
        if register:
            self.registered.add(name)
        return bundle

    def start_client(
        self,
        name: str,
        data: Path,
        task: str,
        register: bool = True,
        certs: Path | None = None,
        insecure: bool | None = None,
        extra: Sequence[str] = (),
        env: dict | None = None,
        netns: str | None = None,
    ) -> subprocess.Popen:
        insecure = (not self.secure) if insecure is None else insecure
        args = [
            "client",
            "start",
            "--coordinator",
            self.address,
            "--data",
            str(data),
            "--task",
            task,
            "--name",
            name,
            "--state",
            str(self.root / "clients" / name),
            *extra,
        ]
        if insecure:
            args.append("--insecure")
        else:
            args += ["--certs", str(certs or self.client_bundle(name, register=register))]
        proc = spawn(
            self.command(*args, netns=netns), self.root / "logs" / f"client-{name}.out", env=fedge_env(**(env or {}))
        )
        self.clients[name] = proc
        return proc

    def stop_client(self, name: str) -> None:
        proc = self.clients.pop(name)
        stop_pid(proc.pid)

    def kill_client(self, name: str) -> None:
        """SIGKILL a customer's daemon with its SuperNode and running ClientApp (a crash, not a shutdown)."""
        _killpg(self.clients.pop(name))

    def kill_coordinator(self) -> None:
        """SIGKILL the coordinator and everything under it (SuperLink, its SuperExec, the running ServerApp)."""
        if self.coordinator is not None:
            _killpg(self.coordinator)
            self.coordinator = None

    def stop_all(self) -> None:
        for name in list(self.clients):
            self.stop_client(name)
        if self.coordinator is not None:
            stop_pid(self.coordinator.pid)
            self.coordinator = None

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def _killpg(proc: subprocess.Popen) -> None:
    from fedge.core.procs import kill_tree

    kill_tree(proc.pid)
    proc.wait(timeout=10)


class EdgeServerProcess:
    """``fedge edge serve`` as a real process on 127.0.0.1 with free ports (the demo, the tests, the benchmarks)."""

    def __init__(
        self,
        repo: Path,
        trust: Path,
        log: Path,
        *flags: str,
        timeout: float = 60.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``python``: the interpreter to serve with (another virtualenv's, as on a device), by default this one;
        ``env``: more environment variables for it."""
        self.python = python or sys.executable
        self.port, self.metrics_port, self.http_port = free_port(), free_port(), free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.repo = Path(repo)
        self.log = Path(log)
        self.proc = spawn(
            fedge_cmd(
                "edge",
                "serve",
                "--repo",
                str(repo),
                "--trust",
                str(trust),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--http-port",
                str(self.http_port),
                *flags,
                python=self.python,
            ),
            self.log,
            env={**fedge_env(), **(env or {})},
        )
        try:
            wait_port("127.0.0.1", self.port, timeout=timeout, proc=self.proc)
            wait_port("127.0.0.1", self.http_port, timeout=timeout, proc=self.proc)  # bound right after gRPC
        except Exception as exc:
            raise RuntimeError(f"edge server did not start: {exc}; log {self.log}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_pid(self.proc.pid)
