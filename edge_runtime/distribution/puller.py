"""Polls the coordinator's release service and keeps each model on the newest release it offers.

Every poll reports what each model serves (the coordinator's device inventory). When the release the
coordinator offers for a model changes, the device moves to it: not at all if it already serves it, by
switching CURRENT if an earlier install of it is still kept (a withdrawn release brings devices back without a
download; a kept copy whose files no longer verify is passed over), else by fetching and installing it, verified
like any install. A fetch the network cuts off resumes where it stopped at the next poll; one that does not fit
on the disk is not started. Between such changes the puller leaves the repository alone, so a local
``fedge edge rollback`` holds until the coordinator's release changes.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from fedge.edge_runtime.common.errors import BundleError, ConfigError, NoSpace
from fedge.edge_runtime.common.tls import channel_credentials
from fedge.edge_runtime.distribution.bundle import MAX_ARCHIVE_BYTES, Verifier, sha256_file, verify_bundle
from fedge.edge_runtime.distribution.repository import (
    activate,
    current_version,
    disk_full_is_no_space,
    ensure_space,
    install_bundle,
    model_dirs,
    valid_model_name,
    versions,
)
from fedge.edge_runtime.distribution.throttle import Throttle, chunk_for
from fedge.proto import release_pb2, release_pb2_grpc

log = logging.getLogger("fedge.edge.pull")


@dataclass(frozen=True)
class PullConfig:
    """Where a device pulls releases from and how (``fedge edge serve --pull ...``)."""

    address: str  # the coordinator's release service, HOST:PORT
    repo: Path  # the model repository releases are installed into
    trust: Path  # the trust file: public key(s) of the release signer
    interval_s: float = 10.0  # between polls
    max_rate: int = 0  # download limit in bytes/s; 0: none
    ca: Path | None = None  # CA for a TLS release service; None = plaintext
    cert: Path | None = None  # this device's client certificate, for a release service that wants one
    key: Path | None = None  # its private key
    device_name: str = ""  # how this device names itself to the release service; "": the host name
    keep_versions: int = 3  # installed versions kept for rollback

    def __post_init__(self) -> None:
        if not self.address:
            raise ConfigError("pulling releases needs the release service's HOST:PORT")
        if self.interval_s <= 0 or self.max_rate < 0:
            raise ConfigError("the pull interval must be > 0 s and the rate limit >= 0 bytes/s")


class HealthSource(Protocol):
    """What a poll reports of the served versions' health (fedge.edge_runtime.monitoring.monitor.Monitor)."""

    def due(self) -> list[release_pb2.HealthSummary]: ...
    def sent(self, summaries: list[release_pb2.HealthSummary]) -> None: ...


class ReleasePuller:
    def __init__(
        self,
        cfg: PullConfig,
        metrics,
        serving: Callable[[], dict[str, int]] | None = None,
        trusted: Verifier | None = None,
        health: HealthSource | None = None,
    ) -> None:
        """``serving()``: model -> the local version the server runs now (what the coordinator is told); without
        it, what each model's CURRENT names. ``trusted``: the server's TrustFile (default: ``cfg.trust``'s).
        ``health``: the summaries each poll carries (counts only; none without it)."""
        self.cfg, self.metrics, self._serving, self._health = cfg, metrics, serving, health
        from fedge.edge_runtime.distribution.trust import TrustFile

        self.trusted = trusted or TrustFile(cfg.trust)
        self.repo = Path(cfg.repo)
        self.device = cfg.device_name or socket.gethostname()
        self._credentials = (
            channel_credentials(cfg.ca, cfg.cert, cfg.key) if (cfg.ca or cfg.cert) else None
        )  # bad files fail here, at start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fedge-puller", daemon=True)
        self._seen: dict[str, int] = {}  # model -> the offered release last acted on (served, installed or refused)
        self._short: dict[str, int] = {}  # model -> the release last found not to fit on the disk (said once)

    def _channel(self) -> grpc.Channel:
        # a rate limit paces reads; without window growth (BDP probing) HTTP/2 flow control then paces the sender
        options = [("grpc.http2.bdp_probe", 0)] if self.cfg.max_rate else []
        if self._credentials is not None:
            return grpc.secure_channel(self.cfg.address, self._credentials, options=options)
        return grpc.insecure_channel(self.cfg.address, options=options)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self.metrics.polls.labels("ok").inc()
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    self.metrics.polls.labels("refused").inc()
                    log.error(
                        "the release service %s refuses this device: %s; still serving what is installed",
                        self.cfg.address,
                        exc.details(),
                    )
                else:
                    self.metrics.polls.labels("unreachable").inc()
                    log.warning(
                        "release service %s unreachable: %s%s",
                        self.cfg.address,
                        exc.code(),
                        ""
                        if self.cfg.cert
                        else " (if it authenticates devices, give this one a certificate: --pull-cert/--pull-key)",
                    )
            except Exception:
                self.metrics.polls.labels("error").inc()
                log.exception("pulling releases failed")
            self._stop.wait(self.cfg.interval_s)

    def _sha(self, model: str, version: int | None) -> str | None:
        manifest = self.repo / model / str(version) / "manifest.json"
        return sha256_file(manifest) if version is not None and manifest.exists() else None

    def current(self) -> list[release_pb2.CurrentModel]:
        """What each model in the repository serves: the version the server runs (not CURRENT's when that one
        failed to load and an older one serves instead)."""
        out = []
        live = self._serving() if self._serving else None
        for d in model_dirs(self.repo):
            v = live.get(d.name) if live is not None else current_version(d)
            sha = self._sha(d.name, v)
            if sha:
                out.append(release_pb2.CurrentModel(model=d.name, manifest_sha256=sha, local_version=v))
        return out

    def poll_once(self) -> list[tuple[str, int]]:
        """One poll; returns the (model, local version) pairs it made CURRENT."""
        changed = []
        current = {c.model: c for c in self.current()}
        with self._channel() as ch:
            stub = release_pb2_grpc.ReleaseServiceStub(ch)
            releases = self._list(stub, list(current.values()))
            newest: dict[str, release_pb2.Release] = {}
            for r in releases:
                if not valid_model_name(r.model):  # a broken or hostile listing: no path is made of it
                    self._refuse(r, f"has the model name {r.model!r}, not a plain directory name")
                    continue
                if r.model not in newest or r.version > newest[r.model].version:
                    newest[r.model] = r
            for model, r in newest.items():
                if r.version == self._seen.get(model):
                    continue
                if model in current and current[model].manifest_sha256 == r.manifest_sha256:
                    log.info("release %s v%s is already serving (not installed again)", model, r.version)
                    self._seen[model] = r.version
                    continue
                kept = self._kept(model, r)
                if kept is not None:
                    if kept != current_version(self.repo / model):  # else it is loading already
                        activate(self.repo, model, kept)
                        log.info(
                            "release %s v%s is kept here as local version %s: serving it again, no download%s",
                            model,
                            r.version,
                            kept,
                            " (the coordinator withdrew the newer release)"
                            if r.version < self._seen.get(model, 0)
                            else "",
                        )
                        changed.append((model, kept))
                    self._seen[model] = r.version
                    continue
                installed = self._fetch_and_install(stub, r)
                if installed is not None:
                    changed.append(installed)
        return changed

    def _list(self, stub, current: list[release_pb2.CurrentModel]) -> list[release_pb2.Release]:
        """The releases offered, reporting what serves and, where due, the health summaries. Summaries the
        coordinator refuses (INVALID_ARGUMENT) are logged and dropped, and the poll is made again without them: a
        bad summary must not keep the device from its releases."""
        health = self._health.due() if self._health is not None else []
        request = release_pb2.ListReleasesRequest(device=self.device, current=current, health=health)
        try:
            releases = list(stub.ListReleases(request, timeout=30).releases)
        except grpc.RpcError as exc:
            if not health or exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            log.error("the release service refused this device's health summaries: %s", exc.details())
            del request.health[:]
            releases = list(stub.ListReleases(request, timeout=30).releases)
        if self._health is not None and health:
            self._health.sent(health)
        return releases

    def _kept(self, model: str, r: release_pb2.Release) -> int | None:
        """The newest local version of release ``r`` whose files still verify; a damaged copy (a power cut, a bad
        sector) is passed over, so the release is downloaded again."""
        for v in reversed(versions(self.repo / model)):
            if self._sha(model, v) != r.manifest_sha256:
                continue
            try:
                verify_bundle(self.repo / model / str(v), self.trusted)
            except BundleError as exc:
                log.warning(
                    "local version %s of release %s v%s is damaged (%s): downloading the release again",
                    v,
                    model,
                    r.version,
                    exc,
                )
                continue
            return v
        return None

    def _refuse(self, r: release_pb2.Release, why: str) -> None:  # returns None: "nothing installed"
        """A release not to be installed (the listing describes it wrongly, or its bundle does not verify): not
        fetched again; said and counted once."""
        if self._seen.get(r.model) != r.version:
            self._seen[r.model] = r.version
            self.metrics.installs.labels("refused").inc()
            log.error("release %r v%s %s: refused", r.model, r.version, why)

    def _fetch_and_install(self, stub, r: release_pb2.Release) -> tuple[str, int] | None:
        """The download must be exactly the archive size the listing announced (at most MAX_ARCHIVE_BYTES): a
        stream that runs past it is cut off there, so a broken or hostile service cannot fill the device's disk."""
        expected = r.archive_bytes
        if not 0 < expected <= MAX_ARCHIVE_BYTES:
            self._refuse(r, f"announces a {expected}-byte archive (this device takes 1 to {MAX_ARCHIVE_BYTES} bytes)")
            return None
        if not re.fullmatch(r"[0-9a-f]{64}", r.manifest_sha256):
            self._refuse(r, f"has the manifest sha256 {r.manifest_sha256[:80]!r}, not 64 hex digits")
            return None
        partial = self.repo / f".partial-{r.model}-{r.manifest_sha256[:16]}.tar"  # a cut download, kept
        for stale in self.repo.glob(".partial-*.tar"):  # what is left of an older release's download
            if stale != partial and re.fullmatch(rf"\.partial-{re.escape(r.model)}-[0-9a-f]{{16}}\.tar", stale.name):
                stale.unlink(missing_ok=True)
        held = partial.stat().st_size if partial.exists() else 0
        if held >= expected:
            partial.unlink()
            held = 0
        what = f"release {r.model} v{r.version} (a {expected}-byte archive, unpacked beside it)"
        try:
            ensure_space(self.repo, 2 * expected - held, what)
            with disk_full_is_no_space(self.repo, what):
                return self._download_and_install(stub, r, expected, partial, held)
        except NoSpace as exc:  # tried again at every poll (room may have been made), said once per release
            partial.unlink(missing_ok=True)  # the device's disk is full: what arrived goes too
            if self._short.get(r.model) != r.version:
                self._short[r.model] = r.version
                self.metrics.installs.labels("no_space").inc()
                log.error("%s; trying again at every poll", exc)
            return None

    def _download_and_install(
        self, stub, r: release_pb2.Release, expected: int, partial: Path, held: int
    ) -> tuple[str, int] | None:
        """Fetch the archive into ``partial`` from byte ``held`` on (what a cut download left), then install it.
        A cut keeps what arrived for the next poll; anything else that goes wrong drops it."""
        if held:
            log.info("resuming release %s v%s at byte %d of %d", r.model, r.version, held, expected)
        rate = self.cfg.max_rate
        call = stub.FetchRelease(
            release_pb2.FetchReleaseRequest(
                model=r.model,
                version=r.version,
                device=self.device,
                offset=held,
                max_chunk_bytes=chunk_for(rate) if rate else 0,
            ),
            timeout=300 + (expected - held) / rate if rate else 300,
        )
        throttle = Throttle(rate, self._stop.wait) if rate else None
        started, problem = time.monotonic(), None
        with open(partial, "r+b" if held else "wb") as out:
            out.seek(held)
            try:
                for i, chunk in enumerate(call):
                    if i == 0 and chunk.offset != held:  # a service that does not resume: its archive from the start
                        if chunk.offset != 0:
                            problem = f"started at byte {chunk.offset}, not at {held} as asked, of"
                            call.cancel()
                            break
                        log.info("the release service sent release %s v%s from its start", r.model, r.version)
                        out.seek(0)
                        out.truncate()
                    if out.tell() + len(chunk.data) > expected:
                        problem = "more than"
                        call.cancel()
                        break
                    out.write(chunk.data)
                    if throttle is not None and not throttle.spend(len(chunk.data)):  # the server is stopping
                        call.cancel()
                        return None
            except OSError:  # the disk filled up: stop the stream
                call.cancel()
                raise
            except grpc.RpcError as exc:  # a cut: what arrived is kept, the next poll resumes after it
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    raise
                log.warning(
                    "fetching release %s v%s stopped after byte %d of %d (%s: %s); resuming there at the next poll",
                    r.model,
                    r.version,
                    out.tell(),
                    expected,
                    exc.code(),
                    exc.details(),
                )
                return None
            size = out.tell()
        took = time.monotonic() - started
        log.info(
            "fetched release %s v%s: %d bytes in %.2f s (%.0f kB/s%s)",
            r.model,
            r.version,
            size - held,
            took,
            (size - held) / max(took, 1e-6) / 1e3,
            f", limit {rate / 1e3:.0f} kB/s" if rate else "",
        )
        if problem or size != expected:
            partial.unlink(missing_ok=True)
            log.warning(
                "fetching release %s v%s: the service streamed %s the %d bytes it announced;"
                " dropped, trying again at the next poll",
                r.model,
                r.version,
                problem or f"{size} bytes, not",
                expected,
            )
            return None
        try:
            name, version = install_bundle(self.repo, partial, self.trusted, self.cfg.keep_versions)
        except BundleError as exc:
            if held:  # pieced together from two downloads: fetch it whole once before calling the release bad
                log.warning(
                    "release %s v%s resumed at byte %d does not verify (%s): fetching it whole at the next poll",
                    r.model,
                    r.version,
                    held,
                    exc,
                )
                return None
            self._refuse(r, f"does not install ({exc})")  # not fetched again
            return None
        finally:
            partial.unlink(missing_ok=True)
        self._seen[r.model] = r.version
        self.metrics.installs.labels("installed").inc()
        log.info("release %s v%s installed as local version %s", r.model, r.version, version)
        return name, version
