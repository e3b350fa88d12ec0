"""Rotating the release signing key on a device that keeps serving: `fedge edge serve` follows its --trust file."""

import os
import time

import grpc
import numpy as np

from fedge.edge_runtime.distribution.bundle import generate_keys
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
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
            _wait(
                lambda: "still trusting the 2 key(s) read before" in server.log.read_text(),
                "a bad trust file was not reported",
            )
            v3 = make_bundle(tmp_path / "v3", new_priv, "digits", seed=2)  # verified with the keys it kept
            assert fedge("edge", "install", str(v3), "--repo", str(repo), "--trust", str(both)).returncode == 0
            _wait(lambda: _served_version(stub) == "3", "version 3 never served")
    finally:
        server.stop()


def test_the_coordinator_rotates_its_key_and_retires_the_old_one_only_once_the_fleet_moved(tmp_path):
    """fedge keys rotate / status / retire against a real coordinator and a device pulling from it; the device
    takes each trust file the coordinator writes, as a configuration tool would hand it out."""
    import json

    from fedge.cli.cluster import LocalFederation
    from tests.edge.test_release_pull import _publish, pull_flags

    fed = LocalFederation(tmp_path / "fed")
    fed.start_coordinator()
    keys, state = fed.state / "keys", ("--state", str(fed.state))
    assert fedge("keys", "init", "--out", str(keys)).returncode == 0
    device_trust = tmp_path / "device-trust.pub"
    device_trust.write_bytes((keys / "trust.pub").read_bytes())
    pull = (*pull_flags(fed), "--device-name", "till-3")

    def serves(stub, version: str) -> bool:
        try:
            return _served_version(stub) == version
        except grpc.RpcError:
            return False

    def status() -> dict:
        out = fedge("keys", "status", *state, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    edge = None
    try:
        _publish(fed, make_bundle(tmp_path / "r1", keys / "release.key", "digits", seed=0))
        edge = EdgeProcess(tmp_path / "repo", device_trust, tmp_path / "edge.log", *pull)
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            _wait(lambda: serves(stub, "1"), "release 1 never served")
            first = status()["current"]
            out = fedge("keys", "rotate", *state)
            assert out.returncode == 0 and "trust.pub" in out.stdout, out.stderr
            _wait(
                lambda: [m["release"] for d in status()["devices"] for m in d["models"]] == [1],
                "the device never reported release 1",
            )
            # the offered release and the device's are signed with the old key: retiring it is refused
            out = fedge("keys", "retire", *state)
            assert out.returncode == 2
            assert f"device till-3 serves digits from release 1, signed with {first}" in out.stderr
            assert f"release 1 (digits) is offered and signed with {first}" in out.stderr
            assert len((keys / "trust.pub").read_bytes().split(b"BEGIN PUBLIC KEY")) == 3  # both keys

            _replace(device_trust, (keys / "trust.pub").read_bytes())
            _publish(fed, make_bundle(tmp_path / "r2", keys / "release.key", "digits", seed=1))  # the new key
            _wait(lambda: serves(stub, "2"), "release 2, signed with the new key, never served")
            _wait(lambda: not status()["blockers"], "the device never reported release 2")
            info = status()
            assert [(r["id"], r["signed_by"]) for r in info["releases"]] == [(1, first), (2, info["current"])]
            assert info["previous"] == [first] and info["current"] != first

            out = fedge("keys", "retire", *state)
            assert out.returncode == 0 and f"retired {first}" in out.stdout, out.stderr
            assert len((keys / "trust.pub").read_bytes().split(b"BEGIN PUBLIC KEY")) == 2  # the new key alone
            assert not list((keys / "previous").glob("*.key"))  # the old private key is gone
            _replace(device_trust, (keys / "trust.pub").read_bytes())
        edge.stop()
        # retiring was safe: restarted with the new key alone, the device serves what it had
        edge = EdgeProcess(tmp_path / "repo", device_trust, tmp_path / "edge2.log", *pull)
        with grpc.insecure_channel(edge.url) as ch:
            assert _served_version(pb_grpc.GRPCInferenceServiceStub(ch)) == "2"
        assert status()["previous"] == []
    finally:
        if edge is not None:
            edge.stop()
        fed.stop_all()
