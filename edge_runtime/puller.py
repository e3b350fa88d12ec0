"""Polls the coordinator's release service and installs newer signed releases (verified like any install)."""
from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import grpc

from proto import release_pb2, release_pb2_grpc

from .errors import BundleError
from .repository import current_version, install_bundle
from .tls import channel_credentials

log = logging.getLogger("fedge.edge.pull")


class ReleasePuller:
    def __init__(self, cfg, metrics) -> None:
        self.cfg, self.metrics = cfg, metrics
        from .bundle import load_public_key

        self.trusted = load_public_key(cfg.trust)
        self._credentials = channel_credentials(cfg.pull_ca, cfg.pull_cert, cfg.pull_key) if (
            cfg.pull_ca or cfg.pull_cert) else None  # bad files fail here, at start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fedge-puller", daemon=True)
        self._seen: dict[str, int] = {}  # model -> newest release version handled (installed or refused)

    def _channel(self) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(self.cfg.pull, self._credentials)
        return grpc.insecure_channel(self.cfg.pull)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except grpc.RpcError as exc:
                log.warning("release service %s unreachable: %s%s", self.cfg.pull, exc.code(),
                            "" if self.cfg.pull_cert else " (if it authenticates devices, give this one a"
                            " certificate: --pull-cert/--pull-key)")
            except Exception:
                log.exception("pulling releases failed")
            self._stop.wait(self.cfg.pull_interval_s)

    def _installed_sha(self, model: str) -> str | None:
        from .bundle import sha256_file

        v = current_version(Path(self.cfg.repo) / model)
        manifest = Path(self.cfg.repo) / model / str(v) / "manifest.json"
        return sha256_file(manifest) if v is not None and manifest.exists() else None

    def poll_once(self) -> list[tuple[str, int]]:
        installed = []
        with self._channel() as ch:
            stub = release_pb2_grpc.ReleaseServiceStub(ch)
            releases = stub.ListReleases(release_pb2.ListReleasesRequest(), timeout=30).releases
            newest: dict[str, release_pb2.Release] = {}
            for r in releases:
                if r.model not in newest or r.version > newest[r.model].version:
                    newest[r.model] = r
            for model, r in newest.items():
                if r.version <= self._seen.get(model, 0):
                    continue
                if self._installed_sha(model) == r.manifest_sha256:
                    log.info("release %s v%s is already serving (not installed again)", model, r.version)
                    self._seen[model] = r.version
                    continue
                with tempfile.NamedTemporaryFile(suffix=".tar", dir=self.cfg.repo) as tmp:
                    try:
                        for chunk in stub.FetchRelease(release_pb2.FetchReleaseRequest(model=model, version=r.version),
                                                       timeout=300):
                            tmp.write(chunk.data)
                    except grpc.RpcError as exc:  # a broken download is dropped and tried again at the next poll
                        log.warning("fetching release %s v%s failed after %d bytes (%s: %s); trying again at the"
                                    " next poll", model, r.version, tmp.tell(), exc.code(), exc.details())
                        continue
                    tmp.flush()
                    self._seen[model] = r.version  # installed or refused: either way not fetched again
                    try:
                        name, version = install_bundle(Path(self.cfg.repo), Path(tmp.name), self.trusted,
                                                       self.cfg.serving.keep_versions)
                    except BundleError as exc:
                        self.metrics.installs.labels("refused").inc()
                        log.error("release %s v%s refused: %s", model, r.version, exc)
                        continue
                self.metrics.installs.labels("installed").inc()
                log.info("release %s v%s installed as local version %s", model, r.version, version)
                installed.append((name, version))
        return installed
