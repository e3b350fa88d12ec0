import json
import subprocess
import sys
import time
from pathlib import Path

from fedge.core.procs import fedge_env
from fedge.server.registry import Registry


def launch_cmd(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fedge.cli", "run", "launch", "--state", str(state), "--json", *args]


def start_launch(state: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(launch_cmd(state, *args), stdout=open(log, "w"), stderr=subprocess.STDOUT, env=fedge_env())


def wait_rounds(state: Path, run_id: int, n: int, timeout: float = 300) -> None:
    reg = Registry(state / "registry.db")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(reg.rounds(run_id)) >= n:
            return
        time.sleep(0.3)
    raise TimeoutError(f"run {run_id} did not reach {n} rounds in {timeout}s")


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def json_tail(text: str) -> dict:
    """The JSON document `--json` prints last (progress goes to stderr, but tests merge them)."""
    start = text.index("\n{\n") + 1 if "\n{\n" in text else text.index("{")
    return json.loads(text[start:])
