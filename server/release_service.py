"""The coordinator's release service (``fedge.release.v1.ReleaseService``): devices started with
``fedge edge serve --pull ADDR`` list the signed releases in the registry and stream a bundle in chunks.

The service only moves bytes: every device verifies the signature and hashes itself before installing.
Served over TLS with the coordinator's certificate unless the coordinator runs ``--insecure``; with
``--release-client-auth`` only devices holding a client certificate the coordinator's CA signed
(``fedge certs issue DEVICE --client``) may connect (mutual TLS), and each fetch is logged with the device's name.
"""
from __future__ import annotations

import json
import logging
from concurrent import futures
from pathlib import Path

import grpc

from edge_runtime.bundle import pack
from proto import release_pb2, release_pb2_grpc

from .registry import Registry, registry_path

CHUNK_BYTES = 1 << 20
log = logging.getLogger("fedge.releases")


class ReleaseServicer(release_pb2_grpc.ReleaseServiceServicer):
    """A release's version is its registry id, which only grows; its model name is the manifest's."""

    def __init__(self, state: Path) -> None:
        self.registry = Registry(registry_path(Path(state)))

    def _available(self) -> list[tuple[release_pb2.Release, Path]]:
        out = []
        for row in self.registry.releases():
            bundle = Path(row["path"])
            try:
                manifest = json.loads((bundle / "manifest.json").read_text())
                size = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())
            except (OSError, ValueError):
                continue  # a release whose files are gone is not offered
            out.append((release_pb2.Release(model=str(manifest.get("model", "")), version=int(row["id"]),
                                            manifest_sha256=row["manifest_sha256"], archive_bytes=size), bundle))
        return out

    def ListReleases(self, request, context):
        return release_pb2.ListReleasesResponse(
            releases=[r for r, _ in self._available() if not request.model or r.model == request.model])

    def FetchRelease(self, request, context):
        for r, bundle in self._available():
            if r.model == request.model and r.version == request.version:
                data = pack(bundle)
                log.info("streaming release %s v%d (%d bytes) to %s", r.model, r.version, len(data), _device(context))
                for i in range(0, len(data), CHUNK_BYTES):
                    yield release_pb2.ReleaseChunk(data=data[i:i + CHUNK_BYTES])
                return
        context.abort(grpc.StatusCode.NOT_FOUND, f"no release {request.model!r} version {request.version}")


def _device(context) -> str:
    """The device as its client certificate names it (mutual TLS), else its address."""
    names = context.auth_context().get("x509_common_name")
    return f"{names[0].decode()} ({context.peer()})" if names else context.peer()


def serve_releases(state: Path, address: str, cert: Path | None = None, key: Path | None = None,
                   client_ca: Path | None = None) -> grpc.Server:
    """Start the release service on ``address`` (TLS when ``cert``/``key`` are given; mutual TLS, devices
    presenting a certificate ``client_ca`` signed, when that is given too) and return the server."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    release_pb2_grpc.add_ReleaseServiceServicer_to_server(ReleaseServicer(state), server)
    if client_ca is not None and cert is None:
        raise ValueError("devices can be authenticated only over TLS (the release service has no certificate)")
    if cert is not None and key is not None:
        ca = Path(client_ca).read_bytes() if client_ca else None
        creds = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())], root_certificates=ca,
                                            require_client_auth=ca is not None)
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"release service cannot bind {address}")
    server.start()
    return server
