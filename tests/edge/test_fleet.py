"""Fleet management over the wire: a real coordinator (release service with mutual TLS) and a real edge server
pulling from it. The operator sees what the device serves, withdraws a bad release (the device goes back to the
one before without downloading it again), and revokes the device (refused, still serving, then restored)."""

import json
import urllib.request

import grpc
import numpy as np
import pytest

from fedge.cli.cluster import LocalFederation
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from tests.edge.bundles import make_bundle
from tests.edge.conftest import EdgeProcess, fedge
from tests.edge.test_release_pull import _publish, _serves, _wait_for, pull_flags

pytestmark = pytest.mark.e2e


def _cli(*args: str) -> str:
    out = fedge(*args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_operator_sees_withdraws_and_revokes_over_the_release_service(tmp_path, keys):
    fed = LocalFederation(tmp_path / "fed", release_client_auth=True)
    fed.start_coordinator()
    state = ("--state", str(fed.state))
    edge = None
    try:
        r1 = _publish(fed, make_bundle(tmp_path / "r1", keys[0], "digits", seed=0))
        _cli("certs", "issue", "camera-7", "--certs", str(fed.certs), "--client", "--out", str(tmp_path))
        edge = EdgeProcess(
            tmp_path / "repo",
            keys[1],
            tmp_path / "edge.log",
            *pull_flags(fed),
            "--pull-cert",
            str(tmp_path / "camera-7.pem"),
            "--pull-key",
            str(tmp_path / "camera-7.key"),
            "--device-name",
            "what-it-claims",
        )
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        req.raw_input_contents.append(np.zeros((1, 1, 8, 8), np.float32).tobytes())
        log = tmp_path / "edge.log"
        coordinator_log = fed.root / "logs" / "coordinator.out"
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            def serving(version):
                return _serves(stub, req, version)

            def device(release):  # the inventory once the device has reported serving `release`
                def reported():
                    devices = json.loads(_cli("coordinator", "devices", "--json", *state))
                    return devices if devices and [c["release"] for c in devices[0]["current"]] == [release] else None

                return _wait_for(reported, what=f"the device reports release {release}")

            _wait_for(lambda: serving("1"), what="release 1 served")
            r2 = _publish(fed, make_bundle(tmp_path / "r2", keys[0], "digits", seed=1))
            _wait_for(lambda: serving("2"), what="release 2 served")

            [d] = device(r2)  # named by its certificate, not by what it calls itself
            assert (d["name"], d["authenticated"], d["revoked"]) == ("camera-7", True, None)
            assert d["current"][0]["local_version"] == 2 and d["current"][0]["state"] == "up to date"
            assert "camera-7  [certificate]" in _cli("coordinator", "devices", *state)

            out = _cli("release", "withdraw", str(r2), "--reason", "misroutes refunds", *state)
            assert f"devices move to release {r1}" in out, out
            _wait_for(lambda: serving("1"), what="back on release 1 after the withdrawal")
            assert "serving it again, no download (the coordinator withdrew the newer release)" in log.read_text()
            assert coordinator_log.read_text().count(f"streaming release digits v{r1} ") == 1  # fetched once only
            [d] = device(r1)
            assert d["current"][0]["local_version"] == 1 and d["current"][0]["state"] == "up to date"
            listing = _cli("release", "list", *state)
            assert f"release {r2}: " in listing and "WITHDRAWN (misroutes refunds)" in listing, listing
            assert "serving on 1 device(s)" in listing.splitlines()[0], listing

            _cli("release", "restore", str(r2), *state)
            _wait_for(lambda: serving("2"), what="on release 2 again once it is restored")

            out = _cli("coordinator", "revoke-device", "camera-7", "--reason", "reported stolen", *state)
            assert "refuses it (PERMISSION_DENIED)" in out
            metrics = f"http://127.0.0.1:{edge.metrics_port}/metrics"

            def refused_polls():
                text = urllib.request.urlopen(metrics, timeout=5).read().decode()
                line = [
                    x for x in text.splitlines() if x.startswith('fedge_edge_release_polls_total{outcome="refused"}')
                ]
                return float(line[0].split()[-1]) if line else 0.0

            _wait_for(lambda: refused_polls() >= 1, what="the revoked device refused")
            r3 = _publish(fed, make_bundle(tmp_path / "r3", keys[0], "digits", seed=2))
            _wait_for(lambda: refused_polls() >= 3, what="polls after release 3 was published")
            assert serving("2") and not (tmp_path / "repo" / "digits" / "3").exists()  # keeps serving, gets nothing new
            assert "refuses this device: device 'camera-7' was revoked by the operator" in log.read_text()
            assert (
                "reported stolen" in log.read_text()
                and "refused revoked device camera-7" in coordinator_log.read_text()
            )
            [d] = json.loads(_cli("coordinator", "devices", "--json", *state))
            assert d["revoked_reason"] == "reported stolen" and "REVOKED" in _cli("coordinator", "devices", *state)
            assert d["last_seen"] > d["revoked"], d  # its refused polls show: the operator sees it still calling
            assert d["current"][0]["local_version"] == 2  # and what it serves

            _cli("coordinator", "restore-device", "camera-7", *state)
            _wait_for(lambda: serving("3"), what="release 3 installed once the device is restored")
            device(r3)
        bad = fedge("coordinator", "restore-device", "camera-7", *state)
        assert bad.returncode != 0 and "is not revoked" in bad.stderr, bad.stderr
        bad = fedge("release", "withdraw", "99", *state)
        assert bad.returncode != 0 and "no release 99" in bad.stderr, bad.stderr
    finally:
        if edge is not None:
            edge.stop()
        fed.stop_all()
