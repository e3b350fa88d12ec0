import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.cli.cluster import EdgeServerProcess, fedge_cmd
from fedge.core.procs import fedge_env
from fedge.edge_runtime.distribution.bundle import generate_keys
from tests.edge.bundles import make_bundle


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    priv, pub = generate_keys(tmp_path_factory.mktemp("keys"))
    return priv, pub


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory, keys):
    return make_bundle(tmp_path_factory.mktemp("b") / "digits", keys[0], "digits")


@pytest.fixture(scope="session")
def heavy(tmp_path_factory, keys):
    """The digits model's interface on a heavy stand-in model (tests.edge.bundles.heavy_bundle): at least about 4 ms
    a row (a quarter second for 64 rows), so that requests sent together are still together at the server on a
    loaded machine. Deepened where the CPU runs the default 200 layers faster than that (some answer 64 rows in
    0.14 s), since the shutdown tests time their signals against it."""
    import math
    import time

    import onnxruntime as ort

    from tests.edge.bundles import heavy_bundle

    root = tmp_path_factory.mktemp("heavy")
    bundle = heavy_bundle(root / "b", keys[0])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.fp32.onnx"), opts, providers=["CPUExecutionProvider"])
    x = np.zeros((64, 1, 8, 8), np.float32)
    session.run(None, {"input": x})
    t0 = time.perf_counter()
    session.run(None, {"input": x})
    one_call = time.perf_counter() - t0
    if one_call >= 0.25:
        return bundle
    return heavy_bundle(root / "deeper", keys[0], layers=min(1000, math.ceil(200 * 0.3 / one_call)))


@pytest.fixture(scope="session")
def intent_bundle(tmp_path_factory, keys):
    return make_bundle(tmp_path_factory.mktemp("b") / "intent", keys[0], "intent")


def fedge(*args: str, timeout: float = 120, python: str | None = None) -> subprocess.CompletedProcess:
    """``fedge ARGS`` as a process, with ``python`` (a device's interpreter) or this one."""
    return subprocess.run(
        fedge_cmd(*args, python=python), capture_output=True, text=True, timeout=timeout, env=fedge_env()
    )


def edge_cli(server, *args: str, **kw) -> subprocess.CompletedProcess:
    """``fedge ARGS`` with the interpreter that runs ``server``: what the operator of that device types."""
    return fedge(*args, python=server.python, **kw)


DEVICE_VENV = Path(__file__).resolve().parents[2] / ".venv-device"


def device_python() -> str:
    """The interpreter of a device-like install: Python 3.10 (JetPack 6's) with ``pip install .[edge]`` only, made
    by ``make test`` in .venv-device when this machine has a Python 3.10 (FEDGE_DEVICE_PYTHON names another).
    Skips where there is none, fails instead under ``make test`` once it found one (FEDGE_REQUIRE_DEVICE_PYTHON)."""
    import os

    python = os.environ.get("FEDGE_DEVICE_PYTHON") or str(DEVICE_VENV / "bin" / "python")
    if not Path(python).exists():
        if os.environ.get("FEDGE_REQUIRE_DEVICE_PYTHON"):
            pytest.fail(f"no device interpreter at {python}: run `make test` (it builds .venv-device)")
        pytest.skip("no Python 3.10 device install (.venv-device): `make test` builds one where Python 3.10 exists")
    probe = (
        "import sys, importlib.util; print(sys.version_info[:2] >= (3, 10),"
        " [m for m in ('torch', 'flwr', 'sklearn', 'opacus') if importlib.util.find_spec(m)])"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True []", f"{python} is not a device install (Python >= 3.10, no training stack): {out}"
    return python


EdgeProcess = EdgeServerProcess  # `fedge edge serve` on free ports, stopped by PID


def serving(root: Path, keys, bundles, *flags: str, python: str | None = None):
    """Install ``bundles`` into a fresh repository under ``root`` and serve it, both with ``python`` (a device's
    interpreter) or this one (a generator for fixtures: the server is stopped by PID afterwards, and must be gone)."""
    from fedge.core.procs import pid_alive

    for b in bundles:
        out = fedge("edge", "install", str(b), "--repo", str(root / "repo"), "--trust", str(keys[1]), python=python)
        assert out.returncode == 0, out.stderr
    server = EdgeProcess(root / "repo", keys[1], root / "server.log", *flags, python=python)
    yield server
    server.stop()
    assert not pid_alive(server.proc.pid)


def slowed_server(root: Path, keys, bundle: Path, config: dict | None = None, delay_s: float = 0.3):
    """An edge server in this process (gRPC and HTTP on free ports) serving ``bundle`` (the digits model), whose
    batched backend call is slowed to ``delay_s``: a stand-in for a heavy model, as digits answers in microseconds.
    One batch worker (``--instances 1``), so that one call keeps the model busy. ``config``: the model's
    config.json. Yields (server, the rows of each backend call); a fixture's generator."""
    import time

    from fedge.core.procs import free_port
    from fedge.edge_runtime.distribution.bundle import load_public_key
    from fedge.edge_runtime.distribution.repository import install_bundle
    from fedge.edge_runtime.process.serve import EdgeConfig, EdgeServer
    from fedge.edge_runtime.serving.batcher import BatchingConfig
    from fedge.edge_runtime.serving.model_repository import ServingConfig

    install_bundle(root / "repo", bundle, load_public_key(keys[1]))
    if config is not None:
        (root / "repo" / "digits" / "config.json").write_text(json.dumps(config))
    computed = []

    class SlowBackend:
        """The digits backend, each call slowed to ``delay_s`` and its rows recorded."""

        def __init__(self, inner) -> None:
            self.inner, self.name, self.model_file, self.reason = inner, inner.name, inner.model_file, inner.reason

        def run(self, feeds):
            computed.append(len(feeds["input"]))
            time.sleep(delay_s)
            return self.inner.run(feeds)

    serving = ServingConfig(batching=BatchingConfig(instances=1), wrap_backend=SlowBackend)
    server = EdgeServer(
        EdgeConfig(
            repo=root / "repo",
            trust=keys[1],
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            http_port=free_port(),
            serving=serving,
        )
    ).start()
    computed.clear()  # the warm-up's call
    yield server, computed
    server.stop()


def digits_request(timeout_us: int = 0):
    """One zero image for the digits model, with the request's own queue timeout when ``timeout_us``."""
    import numpy as np

    from fedge.proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name="digits", raw_input_contents=[np.zeros((1, 1, 8, 8), np.float32).tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    if timeout_us:
        req.parameters["timeout"].int64_param = timeout_us
    return req


def triton_script(module: str, *args: str) -> dict:
    """Run one of the tritonclient scripts (own process: tritonclient's protos clash with fedge's); its JSON."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120, env=fedge_env()
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module", params=["host", "device"])
def edge_server(request, tmp_path_factory, keys, digits_bundle, intent_bundle):
    """The edge server with both bundles installed, run by this interpreter ("host") and by a device install
    ("device": Python 3.10 with the edge dependencies only, see device_python): every test that talks to it runs
    against both."""
    python = device_python() if request.param == "device" else None
    yield from serving(tmp_path_factory.mktemp("edge"), keys, (digits_bundle, intent_bundle), python=python)


@pytest.fixture
def stub(edge_server):
    from fedge.proto import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(edge_server.url, options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)
