"""One offer policy decides what each device is offered: the release service lists and lets it fetch exactly
that, and the fleet view measures each device against it. A policy that holds one device back (a rollout's
control group) keeps it on the previous release everywhere."""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import grpc
import pytest

from fedge.edge_runtime.distribution.bundle import sha256_file
from fedge.proto import release_pb2
from fedge.server import release_service
from fedge.server.fleet import fleet, offered
from fedge.server.offer import Candidate, LatestRelease, targets
from fedge.server.registry import Registry, registry_path
from tests.edge.bundles import make_bundle


class HoldBack:
    """Offers ``held`` devices everything but the newest release (a control group)."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)

    def offer(self, device: str, releases: Sequence[Candidate]) -> list[Candidate]:
        live = LatestRelease().offer(device, releases)
        return live[:-1] if device in self.held else live


class Context:
    def __init__(self) -> None:
        self.aborted: tuple | None = None

    def auth_context(self) -> dict:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5"

    def abort(self, code, details):
        self.aborted = (code, details)
        raise grpc.RpcError(details)


def test_latest_release_offers_every_release_not_withdrawn() -> None:
    rows = [Candidate(1, "a", False), Candidate(2, "b", False), Candidate(3, "a", True), Candidate(4, "b", False)]
    assert targets(LatestRelease().offer("any", rows)) == {"a": 1, "b": 4}


@pytest.fixture()
def two_releases(tmp_path, keys):
    state = tmp_path / "state"
    state.mkdir()
    registry = Registry(registry_path(state))
    for i in (1, 2):
        bundle = make_bundle(tmp_path / f"r{i}", keys[0], "digits", seed=i)
        registry.add_release(1, i, str(bundle), sha256_file(bundle / "manifest.json"), {})
    return state, registry


def test_the_service_lists_and_fetches_per_device(two_releases) -> None:
    state, _registry = two_releases
    servicer = release_service.ReleaseServicer(state, policy=HoldBack("control-1"))

    def listed(device: str) -> list[int]:
        resp = servicer.ListReleases(release_pb2.ListReleasesRequest(device=device), Context())
        return [r.version for r in resp.releases]

    assert listed("canary-1") == [1, 2] and listed("control-1") == [1]
    ctx = Context()
    with pytest.raises(grpc.RpcError):
        list(servicer.FetchRelease(release_pb2.FetchReleaseRequest(device="control-1", model="digits", version=2), ctx))
    assert ctx.aborted[0] == grpc.StatusCode.NOT_FOUND
    chunks = servicer.FetchRelease(
        release_pb2.FetchReleaseRequest(device="canary-1", model="digits", version=2), Context()
    )
    assert sum(len(c.data) for c in chunks) > 0


def test_the_fleet_view_measures_each_device_against_its_own_offer(two_releases) -> None:
    _, registry = two_releases
    for name in ("canary-1", "control-1"):
        registry.record_device(
            name,
            False,
            "ipv4:127.0.0.1:5",
            [{"model": "digits", "manifest_sha256": "x", "local_version": 1, "release": 1}],
        )
    states = {d["name"]: d["current"][0]["state"] for d in fleet(registry, HoldBack("control-1"))}
    assert states == {"canary-1": "behind", "control-1": "up to date"}
    assert offered(registry.releases()) == {"digits": 2}
    assert offered(registry.releases(), "control-1", HoldBack("control-1")) == {"digits": 1}
    shutil.rmtree(registry.releases()[1]["path"])  # files gone: not offered to anyone
    assert offered(registry.releases()) == {"digits": 1}
