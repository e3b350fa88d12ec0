"""Child-process plumbing shared by the coordinator, the client daemon, the demo and the tests:
free ports, an environment that finds this install's Flower executables, start/stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_address(address: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        if default_port is None:
            raise ConfigError(f"address {address!r} needs a port (HOST:PORT)")
        return address, default_port
    return host.strip("[]"), int(port)


def fedge_env(flwr_home: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for Flower processes: this interpreter's bin dir first on PATH (SuperLink/SuperNode spawn
    ``flower-superexec`` and ``flwr-*app`` by name), no telemetry or update checks, faster task polling."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if flwr_home is not None:
        Path(flwr_home).mkdir(parents=True, exist_ok=True)
        env["FLWR_HOME"] = str(flwr_home)
    env.update(extra)
    return env


def spawn(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None, new_session: bool = True
) -> subprocess.Popen:
    """Start ``cmd`` with output to a log, by default in its own process group (stopped with all its children)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab", buffering=0)
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=new_session,
        stdin=subprocess.DEVNULL,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout: float = 10.0, group: bool = True) -> None:
    """SIGTERM (the process group when ``group``), then SIGINT, then SIGKILL, each bounded by ``timeout``."""

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(os.getpgid(pid), sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGINT, timeout / 2), (signal.SIGKILL, timeout)):
        send(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, whatever process group or session they moved to (a crash)."""
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_port(host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode} before opening {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")
