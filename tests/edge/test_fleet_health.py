"""Fleet health end to end: a real edge process pulling from a real coordinator reports its served version's
health with its polls (counts only); ``fedge fleet health`` shows it; impossible summaries are refused while the
coordinator goes on; a revoked device's reports are not kept."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest

from fedge.cli.cluster import LocalFederation
from fedge.proto import release_pb2, release_pb2_grpc
from fedge.server.registry import Registry, registry_path
from tests.edge.conftest import EdgeProcess, fedge
from tests.edge.test_loop_edge import REFERENCE
from tests.edge.test_release_pull import _publish, _wait_for, pull_flags

pytestmark = pytest.mark.e2e


def _fleet(fed: LocalFederation) -> list[dict]:
    out = fedge("fleet", "health", "--json", "--state", str(fed.state))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _ask(edge, text: str) -> None:
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    req = urllib.request.Request(f"http://{edge.http_url}/v2/models/intent/infer", json.dumps(doc).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def _summary(sha: str, window: int = 60, **changes) -> release_pb2.HealthSummary:
    s = release_pb2.HealthSummary(
        model="intent",
        manifest_sha256=sha,
        local_version=1,
        predictions=window,
        requests=window,
        window=window,
        class_counts=[window] + [0] * 11,
        confidence_counts=[0, window] + [0] * 8,
        confidence_sum=0.15 * window,
        entropy_sum=2.0 * window,
        p99_latency_s=0.01,
    )
    for key, value in changes.items():
        if isinstance(value, list):
            del getattr(s, key)[:]
            getattr(s, key).extend(value)
        else:
            setattr(s, key, value)
    return s


def test_devices_report_health_with_their_polls_and_bad_reports_are_refused(tmp_path, keys) -> None:
    from fedge.edge_runtime.distribution.bundle import sha256_file
    from fedge.export.sample_bundle import untrained_bundle

    fed = LocalFederation(tmp_path / "fed")
    fed.start_coordinator()
    edge = None
    try:
        bundle = untrained_bundle(tmp_path / "r1", keys[0], "intent", monitoring=REFERENCE)
        release = _publish(fed, bundle)
        sha = sha256_file(bundle / "manifest.json")
        edge = EdgeProcess(
            tmp_path / "repo",
            keys[1],
            tmp_path / "edge.log",
            *pull_flags(fed),
            "--device-name",
            "kiosk-1",
            "--health-min-requests",
            "50",
        )
        _wait_for(lambda: (tmp_path / "repo" / "intent" / "CURRENT").exists(), what="release 1 installed")
        _wait_for(lambda: edge_serves(edge), what="the edge serves release 1")
        for i in range(30):
            _ask(edge, f"my card {i} is gone")
        assert _fleet(fed) == []  # 30 < 50: nothing reported yet
        for i in range(40):
            _ask(edge, f"what is my balance {i}")
        (report,) = _wait_for(lambda: _fleet(fed), what="the device's first health report")
        (device,) = report["devices"]
        assert report["release"] == release and report["reference"] and device["device"] == "kiosk-1"
        assert device["predictions"] >= 50 and device["window"] >= 50 and report["drift"] is not None
        assert 1 / 12 <= report["estimated_accuracy"] <= 1 and report["error_rate"] == 0
        text = fedge("fleet", "health", "--state", str(fed.state)).stdout
        assert f"release {release} (intent)" in text and "kiosk-1" in text and "estimated accuracy" in text

        creds = grpc.ssl_channel_credentials((fed.certs / "ca.crt").read_bytes())
        with grpc.secure_channel(fed.release_address, creds) as ch:
            stub = release_pb2_grpc.ReleaseServiceStub(ch)

            def poll(device: str, *summaries):
                return stub.ListReleases(
                    release_pb2.ListReleasesRequest(device=device, health=list(summaries)), timeout=30
                )

            for bad, says in [
                (_summary(sha, class_counts=[60]), "1 class counts for a model of 12 labels"),
                (_summary(sha, window=60, predictions=10), "beyond the 10 predictions"),
                (_summary(sha, confidence_sum=1e12), "confidence sum"),
                (_summary(sha, corrections=1, labelled=5), "labelled"),
            ]:
                with pytest.raises(grpc.RpcError) as e:
                    poll("forger", bad)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in e.value.details()
            assert [r.version for r in poll("forger").releases] == [release]  # the coordinator goes on
            poll("small", _summary(sha, window=10))  # below --health-min-requests: not kept, not refused
            poll("stranger-build", _summary("0" * 64))  # no release of this registry: ignored
            out = fedge("coordinator", "revoke-device", "thief", "--state", str(fed.state))
            assert out.returncode == 0, out.stderr
            with pytest.raises(grpc.RpcError) as e:
                poll("thief", _summary(sha))
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        devices = {d["device"] for d in Registry(registry_path(fed.state)).health()}
        assert devices == {"kiosk-1"}
    finally:
        if edge is not None:
            edge.stop()
        fed.stop_all()


def edge_serves(edge) -> bool:
    try:
        _ask(edge, "hello")
        return True
    except Exception:
        return False
