"""`fedge edge serve` as a systemd ``Type=notify`` unit with ``WatchdogSec=`` (deploy/fedge-edge.service): a real
server process given NOTIFY_SOCKET and WATCHDOG_USEC, as systemd starts it, says READY=1 once it serves, pings
the watchdog while its event loop answers and not while it hangs, and says STOPPING=1 when told to stop. A unix
datagram socket in the test stands in for systemd."""

import socket
import time

import grpc
import pytest

from fedge.edge_runtime.process.systemd import Notifier
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.conftest import EdgeProcess, digits_request, fedge, slowed_server


def _systemd(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    return sock


def _next(sock: socket.socket, wanted: str) -> tuple[str, list[str]]:
    """The first message with the line ``wanted``, and every message before it."""
    seen = []
    while True:
        msg = sock.recv(4096).decode()
        if wanted in msg.split("\n"):
            return msg, seen
        seen.append(msg)


def test_systemd_hears_ready_watchdog_pings_and_stopping(tmp_path, keys, digits_bundle):
    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    sock = _systemd(tmp_path / "notify")
    server = EdgeProcess(
        repo,
        keys[1],
        tmp_path / "server.log",
        env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"},
    )
    try:
        ready, before = _next(sock, "READY=1")
        assert before == []  # nothing before READY
        assert set(ready.split("\n")) == {"READY=1", "STATUS=serving 1 model(s): digits v1", f"MAINPID={server.pid}"}
        with grpc.insecure_channel(server.url) as ch:  # ready means serving
            assert pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(digits_request(), timeout=10).outputs
        t0 = time.monotonic()
        for _ in range(3):  # every half of the 0.4 s watchdog interval
            assert _next(sock, "WATCHDOG=1")[1] == []
        assert time.monotonic() - t0 < 3
    finally:
        server.stop()
    stopping, _ = _next(sock, "STOPPING=1")
    assert "STATUS=stopping: answering the requests in flight" in stopping.split("\n")
    sock.close()


def test_a_hung_event_loop_gets_no_watchdog_ping(tmp_path, keys, digits_bundle):
    server, _ = next(gen := slowed_server(tmp_path, keys, digits_bundle))
    try:
        assert server.responsive(1.0)
        server._loop.call_soon_threadsafe(time.sleep, 1.0)  # the loop stuck in a call for a second
        t0 = time.monotonic()
        assert not server.responsive(0.2) and time.monotonic() - t0 < 0.5
        time.sleep(1.0)
        assert server.responsive(1.0)  # answering again
    finally:
        next(gen, None)


@pytest.mark.parametrize(
    "env, address, watchdog_s",
    [
        ({}, "", None),
        ({"NOTIFY_SOCKET": "@fedge/notify"}, "\0fedge/notify", None),  # the abstract namespace
        ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000"}, "/run/n", 30.0),
        ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, "/run/n", None),  # not ours
    ],
)
def test_the_notify_environment_is_read_as_systemd_writes_it(env, address, watchdog_s):
    n = Notifier(env)
    assert (n.address, n.watchdog_s) == (address, watchdog_s)
    assert n.notify("READY=1") is False  # no systemd listening (or none at all): no error, nothing sent


def test_the_shipped_unit_file_is_one_systemd_accepts(tmp_path):
    """deploy/fedge-edge.service, checked by systemd's own parser with its ExecStart pointed at this install."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (Path(__file__).parents[2] / "deploy" / "fedge-edge.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    fedge_bin = Path(sys.executable).parent / "fedge"
    (tmp_path / "fedge-edge.service").write_text(unit.replace("/opt/fedge/venv/bin/fedge", str(fedge_bin)))
    out = subprocess.run(
        [analyze, "verify", str(tmp_path / "fedge-edge.service")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
