"""Rotating the release signing key on a device that keeps serving: `fedge edge serve` follows its --trust file."""
import os
import time

import grpc
import numpy as np

from edge_runtime.bundle import generate_keys
from proto import grpc_service_pb2 as pb
from proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle
from tests.edge.conftest import EdgeProcess, fedge


def _served_version(stub) -> str:
    req = pb.ModelInferRequest(model_name="digits")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    req.raw_input_contents.append(np.zeros((1, 1, 8, 8), np.float32).tobytes())
    return stub.ModelInfer(req, timeout=10).model_version


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _replace(path, data: bytes) -> None:
    """Write aside, then rename over it: how a configuration tool updates the file."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_running_server_takes_a_new_signing_key_from_its_trust_file_without_a_restart(tmp_path, keys, digits_bundle):
    old_pub = keys[1].read_bytes()
    new_priv, new_pub = generate_keys(tmp_path / "new")
    trust = tmp_path / "trust.pub"
    trust.write_bytes(old_pub)
    repo = tmp_path / "repo"
    assert fedge("edge", "install", str(digits_bundle), "--repo", str(repo), "--trust", str(trust)).returncode == 0
    server = EdgeProcess(repo, trust, tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert _served_version(stub) == "1"
            # a release signed with the new key, installed with a trust file that has it: the server, still
            # trusting only the old key, refuses to load it and keeps serving version 1
            both = tmp_path / "both.pub"
            both.write_bytes(old_pub + new_pub.read_bytes())
            v2 = make_bundle(tmp_path / "v2", new_priv, "digits", seed=1)
            out = fedge("edge", "install", str(v2), "--repo", str(repo), "--trust", str(both))
            assert out.returncode == 0, out.stderr
            _wait(lambda: "signature does not verify" in server.log.read_text(), "the server never tried version 2")
            assert _served_version(stub) == "1"

            _replace(trust, old_pub + new_pub.read_bytes())  # the device is given both keys: no restart
            _wait(lambda: _served_version(stub) == "2", "version 2 never served after the trust file changed")
            assert "releases now verify against its 2 key(s)" in server.log.read_text()

            _replace(trust, b"half a file")  # a bad replacement changes nothing
            _wait(lambda: "still trusting the 2 key(s) read before" in server.log.read_text(),
                  "a bad trust file was not reported")
            v3 = make_bundle(tmp_path / "v3", new_priv, "digits", seed=2)  # verified with the keys it kept
            assert fedge("edge", "install", str(v3), "--repo", str(repo), "--trust", str(both)).returncode == 0
            _wait(lambda: _served_version(stub) == "3", "version 3 never served")
    finally:
        server.stop()
