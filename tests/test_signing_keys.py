"""The coordinator's key lifecycle against its registry (releases and device reports written as the release
service writes them): what blocks retiring the previous key and what does not. Over the wire with a real device:
tests/edge/test_key_rotation.py."""

import pytest

from fedge.edge_runtime.distribution.bundle import generate_keys, load_public_key, sha256_file
from fedge.server.registry import Registry, registry_path
from fedge.server.signing_keys import KeyRing, KeyringError, retire, rotate, status
from tests.edge.bundles import make_bundle


@pytest.fixture
def state(tmp_path):
    generate_keys(tmp_path / "state" / "keys")
    return tmp_path / "state"


def _release(registry: Registry, state, tmp_path, name: str, seed: int) -> int:
    bundle = make_bundle(tmp_path / name, state / "keys" / "release.key", "digits", seed=seed)
    return registry.add_release(1, 1, str(bundle), sha256_file(bundle / "manifest.json"), {})


def _reports(registry: Registry, device: str, release: int | None) -> None:
    registry.record_device(
        device,
        True,
        "10.0.0.7:5000",
        [{"model": "digits", "manifest_sha256": "ab" * 32, "local_version": 1, "release": release}],
    )


def test_each_rotation_keeps_every_previous_key_trusted_until_retired(state, tmp_path):
    registry = Registry(registry_path(state))
    first = KeyRing.load(state).current[0]
    r1 = _release(registry, state, tmp_path, "r1", 0)
    second = rotate(state).current[0]
    r2 = _release(registry, state, tmp_path, "r2", 1)
    ring = rotate(state)
    assert sorted(ring.previous) == sorted([first, second])
    assert len(load_public_key(state / "keys" / "trust.pub").keys) == 3
    r3 = _release(registry, state, tmp_path, "r3", 2)
    signed = {r["id"]: r["signed_by"] for r in status(state, registry)["releases"]}
    assert signed == {r1: first, r2: second, r3: ring.current[0]}


def test_what_blocks_retiring_and_what_does_not(state, tmp_path):
    registry = Registry(registry_path(state))
    old = _release(registry, state, tmp_path, "old", 0)
    rotate(state)
    _reports(registry, "shelf-cam", old)
    _reports(registry, "door-cam", None)  # a build installed by hand: which key it needs is unknown
    _reports(registry, "lost-cam", old)
    registry.revoke_device("lost-cam", "stolen")  # a revoked device no longer counts
    blockers = status(state, registry)["blockers"]
    assert any(b.startswith(f"release {old} (digits) is offered") for b in blockers)
    assert any(b.startswith(f"device shelf-cam serves digits from release {old}") for b in blockers)
    assert any(b.startswith("device door-cam serves digits from a build that is no release") for b in blockers)
    assert not any("lost-cam" in b for b in blockers) and len(blockers) == 3

    new = _release(registry, state, tmp_path, "new", 1)  # offered now: the old release no longer blocks
    _reports(registry, "shelf-cam", new)
    _reports(registry, "door-cam", new)
    assert status(state, registry)["blockers"] == []


def test_retire_refuses_while_blocked_and_force_overrides(state, tmp_path):
    registry = Registry(registry_path(state))
    old = _release(registry, state, tmp_path, "old", 0)
    first = KeyRing.load(state).current[0]
    rotate(state)
    _reports(registry, "shelf-cam", old)
    with pytest.raises(KeyringError, match="device shelf-cam serves digits"):
        retire(state, registry)
    assert len(load_public_key(state / "keys" / "trust.pub").keys) == 2  # nothing changed
    assert (state / "keys" / "previous" / f"{first}.key").exists()
    assert retire(state, registry, force=True) == [first]
    assert len(load_public_key(state / "keys" / "trust.pub").keys) == 1
    assert not (state / "keys" / "previous" / f"{first}.key").exists()
    assert (state / "keys" / "retired" / f"{first}.pub").exists()
    assert retire(state, registry) == []  # nothing left to retire
    info = status(state, registry)  # the history stays readable: the retired key is named as the old one's signer
    assert [r["signed_by"] for r in info["releases"]] == [first] and info["blockers"] == []


def test_without_a_signing_key_every_command_says_what_to_run(tmp_path):
    with pytest.raises(KeyringError, match="fedge keys init --out"):
        rotate(tmp_path / "empty")
