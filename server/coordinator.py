"""``fedge coordinator start``: the coordinator is a real Flower SuperLink (Fleet, Control and Runtime APIs on
one port) with its SQLite database in the state dir, TLS and SuperNode authentication on unless ``--insecure``,
and runtime dependency installation disabled (fedge is preinstalled; hosts may be air-gapped)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from fedge.core.procs import descendants, fedge_env, spawn, split_address, stop_pid, wait_port
from fedge.edge_runtime.common.errors import ConfigError, MissingFileError
from fedge.server.certs import CertPaths, init_certs

DEFAULT_ADDRESS = "127.0.0.1:8000"


@dataclass(frozen=True)
class CoordinatorInfo:
    """What other fedge commands on the coordinator host need to reach it (state/coordinator.json)."""

    address: str
    insecure: bool
    certs: str  # directory with ca.crt (empty when insecure)
    pid: int
    releases: str = ""  # HOST:PORT of the release service devices pull from (empty: not served)

    @property
    def ca(self) -> Path:
        return CertPaths(Path(self.certs)).ca


def info_path(state: Path) -> Path:
    return Path(state) / "coordinator.json"


def load_info(state: Path) -> CoordinatorInfo:
    path = info_path(state)
    if not path.exists():
        raise MissingFileError(f"no coordinator in {state}: start one with `fedge coordinator start --state {state}`")
    return CoordinatorInfo(**json.loads(path.read_text()))


def superlink_command(address: str, state: Path, certs: CertPaths | None) -> list[str]:
    host, port = split_address(address, 8000)
    # Flower's flower-superlink, wrapped so refused TLS handshakes reach the log (server/superlink.py)
    cmd = [
        sys.executable,
        "-m",
        "fedge.server.superlink",
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(Path(state) / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if certs is None:
        return cmd + ["--insecure"]
    return cmd + [
        "--ssl-ca-certfile",
        str(certs.ca),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        "--enable-supernode-auth",
    ]


def prepare_certs(state: Path, certs_dir: Path | None, address: str) -> CertPaths:
    paths = CertPaths(Path(certs_dir) if certs_dir else Path(state) / "certs")
    if not paths.exists():
        if certs_dir:
            raise MissingFileError(
                f"{paths.dir} holds no ca.crt/server.pem/server.key: run `fedge certs init --out {paths.dir}`"
            )
        host, _ = split_address(address, 8000)
        init_certs(paths.dir, hosts=[host] if host not in ("0.0.0.0", "::") else [])
        print(f"created a CA and coordinator certificate in {paths.dir} (hand {paths.ca} to customers)")
    return paths


def _log_to_stderr(name: str) -> None:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def default_release_address(address: str) -> str:
    host, port = split_address(address, 8000)
    return f"{host}:{port + 3}"


def start(
    address: str,
    state: Path,
    certs_dir: Path | None,
    insecure: bool,
    foreground: bool = True,
    release_address: str | None = None,
    release_client_auth: bool = False,
    health_min_predictions: int = 50,
):
    """Start the SuperLink and (in the foreground) the release service on ``release_address`` (default: the
    coordinator's port + 3; "off" serves none); in the foreground, block until the SuperLink exits
    (SIGTERM/SIGINT stop it by PID)."""
    if release_client_auth and insecure:
        raise ConfigError("--release-client-auth authenticates devices by TLS client certificates: drop --insecure")
    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    certs = None if insecure else prepare_certs(state, certs_dir, address)
    proc = spawn(
        superlink_command(address, state, certs),
        state / "logs" / "superlink.log",
        env=fedge_env(state / "flwr-superlink"),
        cwd=state,
        new_session=not foreground,
    )
    host, port = split_address(address, 8000)
    releases = None
    try:
        wait_port("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port, timeout=60, proc=proc)
        if foreground and release_address != "off":
            from fedge.server.release_service import serve_releases

            _log_to_stderr("fedge.releases")  # which device fetched which release

            release_address = release_address or default_release_address(address)
            releases = serve_releases(
                state,
                release_address,
                cert=certs.server_cert if certs else None,
                key=certs.server_key if certs else None,
                client_ca=certs.ca if certs and release_client_auth else None,
                health_min_predictions=health_min_predictions,
            )
    except Exception:
        stop_pid(proc.pid)
        raise
    info = CoordinatorInfo(
        address=address,
        insecure=insecure,
        certs=str(certs.dir.resolve()) if certs else "",
        pid=os.getpid() if foreground else proc.pid,
        releases=release_address or "" if releases is not None else "",
    )
    info_path(state).write_text(json.dumps(asdict(info), indent=2))
    print(
        f"coordinator listening on {address} ({'INSECURE' if insecure else 'TLS + SuperNode auth'}),"
        f" state in {state}, SuperLink pid {proc.pid}",
        flush=True,
    )
    if releases is not None:
        print(
            f"release service on {release_address} (devices: fedge edge serve --pull {release_address}"
            + (", with a device certificate from `fedge certs issue DEVICE --client`" if release_client_auth else "")
            + ")",
            flush=True,
        )
    if not foreground:
        return proc

    def _stop(signum, _frame):
        if releases is not None:
            releases.stop(1)
        stop_pid(proc.pid, group=False)
        for pid in descendants(os.getpid()):  # the SuperExec and any ServerApp it started
            stop_pid(pid, timeout=5, group=False)
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = proc.wait()
    print(f"SuperLink exited with code {code}; log: {state / 'logs' / 'superlink.log'}", file=sys.stderr)
    return code
