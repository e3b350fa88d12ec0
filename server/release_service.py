"""The coordinator's release service (``fedge.release.v1.ReleaseService``): devices started with
``fedge edge serve --pull ADDR`` list the signed releases in the registry and stream a bundle in chunks.

The service only moves bytes: every device verifies the signature and hashes itself before installing.
Served over TLS with the coordinator's certificate unless the coordinator runs ``--insecure``; with
``--release-client-auth`` only devices holding a client certificate the coordinator's CA signed
(``fedge certs issue DEVICE --client``) may connect (mutual TLS), and each fetch is logged with the device's name.

It also keeps the fleet's books in the registry: every poll records the device (its certificate's name, or the
name it gives itself without one) and what each of its models serves (``fedge coordinator devices``). A release
the operator withdraws (``fedge release withdraw``) is no longer offered, so devices go back to the newest one
still offered; a revoked device (``fedge coordinator revoke-device``) gets PERMISSION_DENIED. Revocation by name
is a real barrier only with ``--release-client-auth``: without it a device's name is what it says it is.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedge.edge_runtime.common.errors import ConfigError
from fedge.edge_runtime.distribution.bundle import archive_bytes, pack_chunks
from fedge.edge_runtime.monitoring.summary import InvalidSummary
from fedge.proto import release_pb2, release_pb2_grpc
from fedge.server.fleet import release_model
from fedge.server.health import MIN_PREDICTIONS, HealthBook
from fedge.server.offer import Candidate, LatestRelease, OfferPolicy
from fedge.server.registry import Registry, registry_path

CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 4 << 10  # the smallest chunk a device may ask for (FetchReleaseRequest.max_chunk_bytes)
log = logging.getLogger("fedge.releases")


class ReleaseServicer(release_pb2_grpc.ReleaseServiceServicer):
    """A release's version is its registry id, which only grows; its model name is the manifest's."""

    def __init__(
        self, state: Path, policy: OfferPolicy | None = None, health_min_predictions: int = MIN_PREDICTIONS
    ) -> None:
        self.registry = Registry(registry_path(Path(state)))
        self.health = HealthBook(self.registry, health_min_predictions)  # the summaries polls carry
        self.policy = policy or LatestRelease()  # what each device is offered (server/offer.py)
        self._described: dict[int, tuple[tuple, str | None, int]] = {}  # release id -> (manifest stat, model, size)

    def _available(self, releases: list[dict], device: str = "") -> list[tuple[release_pb2.Release, Path]]:
        """The releases of ``releases`` (Registry.releases() rows) that the policy offers ``device``, with their
        bundle dirs."""
        found: dict[int, tuple[release_pb2.Release, Path, Candidate]] = {}
        for row in releases:
            bundle = Path(row["path"])
            described = self._describe(row, bundle)
            if described is None:
                continue  # its files are gone
            model, size = described
            found[int(row["id"])] = (
                release_pb2.Release(
                    model=model, version=int(row["id"]), manifest_sha256=row["manifest_sha256"], archive_bytes=size
                ),
                bundle,
                Candidate(int(row["id"]), model, row["withdrawn"] is not None),
            )
        offered = self.policy.offer(device, [c for _, _, c in found.values()])
        return [found[c.release][:2] for c in offered]

    def _describe(self, row: dict, bundle: Path) -> tuple[str, int] | None:
        """A release's model and archive size, or None if its files are gone. Every device poll asks this of
        every release: the answer is kept until the release's manifest changes (one stat per release per poll,
        instead of reading and parsing its manifest and sizing its archive)."""
        try:
            st = (bundle / "manifest.json").stat()
        except OSError:
            return None
        key = (str(bundle), st.st_ino, st.st_size, st.st_mtime_ns)
        kept = self._described.get(row["id"])
        if kept is None or kept[0] != key:
            model = release_model(row)
            try:
                size = archive_bytes(bundle) if model is not None else 0
            except OSError:
                model, size = None, 0
            kept = self._described[row["id"]] = (key, model, size)
        return None if kept[1] is None else (kept[1], kept[2])

    def ListReleases(self, request, context):
        rows = self.registry.releases()
        by_sha = {row["manifest_sha256"]: row["id"] for row in rows}
        device = self._admit(
            request.device,
            context,
            [
                {
                    "model": c.model,
                    "manifest_sha256": c.manifest_sha256,
                    "local_version": c.local_version,
                    "release": by_sha.get(c.manifest_sha256),
                }
                for c in request.current
            ],
        )
        try:
            self.health.accept(device.name, list(request.health), rows)
        except InvalidSummary as exc:
            log.warning("refused the health summaries of %s: %s", device, exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return release_pb2.ListReleasesResponse(
            releases=[r for r, _ in self._available(rows, device.name) if not request.model or r.model == request.model]
        )

    def FetchRelease(self, request, context):
        device = self._admit(request.device, context)
        rows = self.registry.releases()
        for r, bundle in self._available(rows, device.name):
            if r.model == request.model and r.version == request.version:
                if not 0 <= request.offset < r.archive_bytes:
                    context.abort(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"offset {request.offset}: release {r.model!r}"
                        f" version {r.version} is a {r.archive_bytes}-byte archive",
                    )
                log.info(
                    "streaming release %s v%d (%d bytes%s) to %s",
                    r.model,
                    r.version,
                    r.archive_bytes,
                    f" from byte {request.offset}" if request.offset else "",
                    device,
                )
                # read from disk as it goes: one chunk in memory
                size = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, request.max_chunk_bytes or CHUNK_BYTES))
                for i, chunk in enumerate(pack_chunks(bundle, size, request.offset)):
                    yield release_pb2.ReleaseChunk(data=chunk, offset=request.offset if i == 0 else 0)
                return
        withdrawn = [row for row in rows if row["id"] == request.version and row["withdrawn"]]
        context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"release {request.model!r} version {request.version} was withdrawn ({withdrawn[0]['withdrawn_reason']})"
            if withdrawn
            else f"no release {request.model!r} version {request.version}",
        )

    def _admit(self, claimed: str, context, current: list[dict] | None = None) -> Device:
        """Who is calling, recorded as seen now (with what it serves, where the call says); aborts with
        PERMISSION_DENIED if the operator revoked that device: its polls still show in the inventory."""
        names = context.auth_context().get("x509_common_name")
        device = (
            Device(names[0].decode(), True, context.peer())
            if names
            else Device(claimed or context.peer(), False, context.peer())
        )
        self.registry.record_device(device.name, device.authenticated, device.address, current)
        revoked = self.registry.revocation(device.name)
        if revoked is not None:
            log.warning("refused revoked device %s", device)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"device {device.name!r} was revoked by the operator"
                f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(revoked['at']))}: {revoked['reason']}",
            )
        return device


@dataclass(frozen=True)
class Device:
    name: str
    authenticated: bool  # the name is its client certificate's (mutual TLS), not just what it calls itself
    address: str

    def __str__(self) -> str:
        return f"{self.name} ({self.address})" if self.authenticated else f"{self.address} (calls itself {self.name!r})"


def serve_releases(
    state: Path,
    address: str,
    cert: Path | None = None,
    key: Path | None = None,
    client_ca: Path | None = None,
    health_min_predictions: int = MIN_PREDICTIONS,
) -> grpc.Server:
    """Start the release service on ``address`` (TLS when ``cert``/``key`` are given; mutual TLS, devices
    presenting a certificate ``client_ca`` signed, when that is given too) and return the server."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    release_pb2_grpc.add_ReleaseServiceServicer_to_server(
        ReleaseServicer(state, health_min_predictions=health_min_predictions), server
    )
    if client_ca is not None and cert is None:
        raise ConfigError("devices can be authenticated only over TLS (the release service has no certificate)")
    if cert is not None and key is not None:
        ca = Path(client_ca).read_bytes() if client_ca else None
        creds = grpc.ssl_server_credentials(
            [(Path(key).read_bytes(), Path(cert).read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"release service cannot bind {address}")
    server.start()
    return server
