import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from edge_runtime.bundle import generate_keys
from fedge.procs import fedge_env, free_port, spawn, stop_pid
from tests.edge.bundles import make_bundle


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    priv, pub = generate_keys(tmp_path_factory.mktemp("keys"))
    return priv, pub


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory, keys):
    return make_bundle(tmp_path_factory.mktemp("b") / "digits", keys[0], "digits")


@pytest.fixture(scope="session")
def intent_bundle(tmp_path_factory, keys):
    return make_bundle(tmp_path_factory.mktemp("b") / "intent", keys[0], "intent")


def fedge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=fedge_env())


class EdgeProcess:
    def __init__(self, repo: Path, trust: Path, log: Path, *extra: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.proc = spawn([sys.executable, "-m", "fedge.cli", "edge", "serve", "--repo", str(repo), "--trust", str(trust),
                           "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port),
                           *extra], log, env=fedge_env())
        self.log = log
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"edge server did not start: {log.read_text()[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        stop_pid(self.proc.pid)


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory, keys, digits_bundle, intent_bundle):
    root = tmp_path_factory.mktemp("edge")
    for b in (digits_bundle, intent_bundle):
        out = fedge("edge", "install", str(b), "--repo", str(root / "repo"), "--trust", str(keys[1]))
        assert out.returncode == 0, out.stderr
    server = EdgeProcess(root / "repo", keys[1], root / "server.log")
    yield server
    server.stop()
    from fedge.procs import pid_alive

    assert not pid_alive(server.proc.pid)


@pytest.fixture
def stub(edge_server):
    from proto import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(edge_server.url, options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)
