"""Over-the-air updates: a real coordinator serves its registry's releases over TLS; a real edge server started
with --pull installs each new one verified, keeps serving through the swap, and refuses a tampered one."""

import re
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.cli.cluster import LocalFederation
from fedge.edge_runtime.distribution.bundle import archive_bytes, pack, sha256_file
from fedge.proto import grpc_service_pb2 as pb
from fedge.proto import grpc_service_pb2_grpc as pb_grpc
from fedge.proto import release_pb2, release_pb2_grpc
from fedge.server.registry import Registry, registry_path
from tests.edge.bundles import make_bundle, reference_logits
from tests.edge.conftest import EdgeProcess, device_python, fedge

pytestmark = pytest.mark.e2e


def _publish(fed: LocalFederation, bundle) -> int:
    return Registry(registry_path(fed.state)).add_release(1, 1, str(bundle), sha256_file(bundle / "manifest.json"), {})


def pull_flags(fed: LocalFederation, address: str = "") -> tuple[str, ...]:
    """`fedge edge serve` flags that pull from ``fed``'s release service (or ``address``, a proxy in front of it)
    over TLS, polling every 0.5 s."""
    return ("--pull", address or fed.release_address, "--pull-ca", str(fed.certs / "ca.crt"), "--pull-interval", "0.5")


def _offering_release_1(tmp_path, keys) -> tuple[LocalFederation, Path]:
    """A started coordinator whose release service offers digits release 1 (signed with the test key)."""
    fed = LocalFederation(tmp_path / "fed")
    fed.start_coordinator()
    try:
        bundle = make_bundle(tmp_path / "r1", keys[0], "digits", seed=0)
        _publish(fed, bundle)
    except BaseException:
        fed.stop_all()
        raise
    return fed, bundle


def _serves(stub, req, version: str) -> bool:
    """Whether the edge server answers ``req`` from local ``version`` (False while it cannot answer)."""
    try:
        return stub.ModelInfer(req, timeout=5).model_version == version
    except grpc.RpcError:
        return False


def _wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("device", ["host", "device"])
def test_edge_pulls_new_releases_from_the_coordinator_and_refuses_tampered_ones(tmp_path, keys, device):
    """``device``: the edge server runs with this interpreter, or with a device install (Python 3.10, edge only)."""
    python = device_python() if device == "device" else None
    fed, _ = _offering_release_1(tmp_path, keys)
    edge = None
    try:
        edge = EdgeProcess(
            tmp_path / "repo",
            keys[1],
            tmp_path / "edge.log",
            *pull_flags(fed),
            "--device-name",
            "shelf-cam",
            python=python,
        )
        x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 1, 8, 8])
        req.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            def serving(version):
                return _serves(stub, req, version)

            _wait_for(lambda: serving("1"), what="release 1 pulled and served")
            v2 = make_bundle(tmp_path / "r2", keys[0], "digits", seed=1)
            _publish(fed, v2)
            _wait_for(lambda: serving("2"), what="release 2 pulled and served")
            out = np.frombuffer(stub.ModelInfer(req).raw_output_contents[0], np.float32).reshape(2, 10)
            np.testing.assert_allclose(out, reference_logits(v2, x), rtol=1e-5, atol=1e-5)

        def inventory():  # without a client certificate the device is known by the name it gives itself
            out = fedge("coordinator", "devices", "--state", str(fed.state))
            return out.stdout if "digits: release 2 (local v2, up to date)" in out.stdout else None

        assert "shelf-cam  [self-named]  last seen" in _wait_for(inventory, what="the device's report of release 2")

        edge.stop()  # a restarted device does not install what it already serves again
        edge = EdgeProcess(tmp_path / "repo", keys[1], tmp_path / "edge2.log", *pull_flags(fed), python=python)
        _wait_for(lambda: "already serving" in (tmp_path / "edge2.log").read_text(), what="a poll after the restart")
        assert sorted(p.name for p in (tmp_path / "repo" / "digits").iterdir() if p.name.isdigit()) == ["1", "2"]
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            bad = tmp_path / "r3"
            shutil.copytree(make_bundle(tmp_path / "r3src", keys[0], "digits", seed=2), bad)
            (bad / "model.fp32.onnx").write_bytes((bad / "model.fp32.onnx").read_bytes()[:-7] + b"tamper!")
            _publish(fed, bad)
            metrics = f"http://127.0.0.1:{edge.metrics_port}/metrics"
            _wait_for(
                lambda: (
                    'fedge_edge_installs_total{outcome="refused"} 1.0'
                    in urllib.request.urlopen(metrics, timeout=5).read().decode()
                ),
                what="tampered release refused",
            )
            assert serving("2")
            assert sorted(p.name for p in (tmp_path / "repo" / "digits").iterdir() if p.name.isdigit()) == ["1", "2"]
        assert "does not match its sha256" in (tmp_path / "edge2.log").read_text()
    finally:
        if edge is not None:
            edge.stop()
        fed.stop_all()


def test_a_release_service_that_authenticates_devices_serves_only_those_with_a_certificate_its_ca_signed(
    tmp_path, keys
):
    from fedge.server.certs import init_certs

    fed = LocalFederation(tmp_path / "fed", release_client_auth=True)
    fed.start_coordinator()
    edges = []
    try:
        _publish(fed, make_bundle(tmp_path / "r1", keys[0], "digits", seed=0))
        ca = str(fed.certs / "ca.crt")
        out = fedge("certs", "issue", "camera-7", "--certs", str(fed.certs), "--client", "--out", str(tmp_path))
        assert out.returncode == 0, out.stderr
        init_certs(tmp_path / "other-ca")  # a CA the coordinator does not know
        out = fedge(
            "certs", "issue", "stranger", "--certs", str(tmp_path / "other-ca"), "--client", "--out", str(tmp_path)
        )
        assert out.returncode == 0, out.stderr

        def device(name: str, *flags: str) -> Path:
            edges.append(
                EdgeProcess(
                    tmp_path / name,
                    keys[1],
                    tmp_path / f"{name}.log",
                    "--pull",
                    fed.release_address,
                    "--pull-ca",
                    ca,
                    "--pull-interval",
                    "0.5",
                    *flags,
                )
            )
            return tmp_path / name / "digits"

        anonymous = device("anonymous")
        stranger = device(
            "stranger", "--pull-cert", str(tmp_path / "stranger.pem"), "--pull-key", str(tmp_path / "stranger.key")
        )
        camera = device(
            "camera", "--pull-cert", str(tmp_path / "camera-7.pem"), "--pull-key", str(tmp_path / "camera-7.key")
        )
        _wait_for(lambda: (camera / "CURRENT").exists(), what="the certified device installs release 1")
        for name in ("anonymous", "stranger"):  # both polled at least twice meanwhile, and were turned away
            log = tmp_path / f"{name}.log"
            _wait_for(lambda log=log: log.read_text().count("unreachable") >= 2, what=f"{name} polls")
        assert not anonymous.exists() and not stranger.exists()
        assert "give this one a certificate: --pull-cert/--pull-key" in (tmp_path / "anonymous.log").read_text()
        coordinator_log = (fed.root / "logs" / "coordinator.out").read_text()
        assert "streaming release digits v1" in coordinator_log and "to camera-7 (" in coordinator_log, coordinator_log

        # a certificate without its key (or a key that is not the certificate's) stops the device at start
        bad = fedge(
            "edge",
            "serve",
            "--repo",
            str(tmp_path / "x"),
            "--trust",
            str(keys[1]),
            "--pull",
            fed.release_address,
            "--pull-ca",
            ca,
            "--pull-cert",
            str(tmp_path / "camera-7.pem"),
            "--pull-key",
            str(tmp_path / "stranger.key"),
            "--port",
            "0",
            "--http-port",
            "0",
            "--metrics-port",
            "0",
            timeout=60,
        )
        assert bad.returncode == 2 and "does not belong to the certificate" in bad.stderr, bad.stderr
    finally:
        for edge in edges:
            edge.stop()
        fed.stop_all()


class CuttingProxy:
    """A TCP proxy to 127.0.0.1:``target``: its first connection is cut once ``cut_after`` bytes have gone to the
    client (a network dropping mid-download), later ones pass through."""

    def __init__(self, target: int, cut_after: int) -> None:
        import socket
        import threading

        self.target, self.cut_after, self.connections = target, cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            limit = self.cut_after if self.connections == 0 else None
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    @staticmethod
    def _pump(src, dst, limit: int | None) -> None:
        import socket

        sent = 0
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_download_cut_off_midway_resumes_where_it_stopped_at_the_next_poll(tmp_path, keys):
    """A network dropping mid-download: what arrived is kept, the next poll asks the coordinator for the rest
    only, and the archive pieced together verifies and installs; nothing is left behind."""
    import re

    from tests.edge.bundles import heavy_bundle

    fed = LocalFederation(tmp_path / "fed")
    fed.start_coordinator()
    proxy = CuttingProxy(fed.release_port, cut_after=1_500_000)  # the bundle is about 4.5 MB: 5 chunks
    edge = None
    try:
        _publish(fed, heavy_bundle(tmp_path / "r1", keys[0]))
        edge = EdgeProcess(
            tmp_path / "repo", keys[1], tmp_path / "edge.log", *pull_flags(fed, f"127.0.0.1:{proxy.port}")
        )
        _wait_installed(tmp_path / "edge.log", what="release 1 installed after the cut")
        log = (tmp_path / "edge.log").read_text()
        stopped = re.search(r"fetching release digits v1 stopped after byte (\d+) of (\d+) ", log)
        assert stopped and 0 < int(stopped[1]) < int(stopped[2]) and "resuming there at the next poll" in log, log
        assert f"resuming release digits v1 at byte {stopped[1]} of {stopped[2]}" in log, log
        coordinator = (fed.root / "logs" / "coordinator.out").read_text()
        assert f"streaming release digits v1 ({stopped[2]} bytes from byte {stopped[1]})" in coordinator
        assert proxy.connections >= 2
        assert not list((tmp_path / "repo").glob(".partial-*")), "the download was left behind"
        from fedge.edge_runtime.common.tls import channel_credentials

        with grpc.secure_channel(fed.release_address, channel_credentials(fed.certs / "ca.crt")) as ch:
            with pytest.raises(grpc.RpcError) as err:  # an offset past the archive's end
                list(
                    release_pb2_grpc.ReleaseServiceStub(ch).FetchRelease(
                        release_pb2.FetchReleaseRequest(model="digits", version=1, offset=int(stopped[2])), timeout=10
                    )
                )
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert f"is a {stopped[2]}-byte archive" in err.value.details()
    finally:
        proxy.close()
        if edge is not None:
            edge.stop()
        fed.stop_all()


def _wait_installed(log: Path, what: str) -> None:
    """Until the device says release digits v1 is installed: it says so after it removed the download it
    installed from (CURRENT appears a moment before, inside the install)."""
    _wait_for(lambda: log.exists() and "release digits v1 installed as local version" in log.read_text(), what=what)


class LyingReleaseService(release_pb2_grpc.ReleaseServiceServicer):
    """Offers one real signed bundle but, until ``honest`` is set, streams ``extra`` bytes more (past the archive
    size it announced) or fewer than it announced: a broken or hostile release service."""

    def __init__(self, bundle: Path, extra: int) -> None:
        self.archive, self.extra, self.honest, self.fetches, self.sent = pack(bundle), extra, False, 0, []
        self.manifest_sha256 = sha256_file(bundle / "manifest.json")
        self.reports = []  # what the device said it serves, poll by poll: model -> local version

    def ListReleases(self, request, context):
        self.reports.append({c.model: c.local_version for c in request.current})
        return release_pb2.ListReleasesResponse(
            releases=[
                release_pb2.Release(
                    model="digits", version=1, manifest_sha256=self.manifest_sha256, archive_bytes=len(self.archive)
                )
            ]
        )

    resumes = False  # honours the request's offset (a service that does not sends the whole archive)

    def FetchRelease(self, request, context):
        self.fetches += 1
        data = (
            self.archive
            if self.honest
            else (self.archive + bytes(self.extra) if self.extra > 0 else self.archive[: self.extra])
        )
        start = request.offset if self.resumes else 0
        self.sent.append(0)
        for i in range(start, len(data), 1 << 20):
            yield release_pb2.ReleaseChunk(data=data[i : i + (1 << 20)], offset=start if i == start else 0)
            self.sent[-1] += len(data[i : i + (1 << 20)])


def _serve_releases(service: release_pb2_grpc.ReleaseServiceServicer) -> tuple[grpc.Server, int]:
    """``service`` as a release service on a free port of 127.0.0.1 (stop the server with .stop(0))."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    release_pb2_grpc.add_ReleaseServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.mark.parametrize("extra", [64 << 20, -1000])
def test_a_download_longer_or_shorter_than_announced_is_dropped_and_nothing_installed(tmp_path, keys, extra):
    """A release service that streams past the archive size it announced is cut off there (a device's disk is not
    filled); one that ends short is not installed either; both are fetched again and installed once honest."""
    bundle = make_bundle(tmp_path / "r1", keys[0], "digits", seed=0)
    service = LyingReleaseService(bundle, extra)
    server, port = _serve_releases(service)
    edge = EdgeProcess(
        tmp_path / "repo", keys[1], tmp_path / "edge.log", "--pull", f"127.0.0.1:{port}", "--pull-interval", "0.3"
    )
    try:
        _wait_for(lambda: service.fetches >= 2, what="two fetches")
        log = (tmp_path / "edge.log").read_text()
        said = "streamed more than the" if extra > 0 else f"streamed {len(service.archive) + extra} bytes, not the"
        assert f"{said} {len(service.archive)} bytes it announced" in log, log
        if extra > 0:  # the device hung up: the service's stream stopped long before its 64 MiB of excess
            assert max(service.sent[:2]) < 16 << 20, service.sent
        assert not (tmp_path / "repo" / "digits").exists()  # (a download may be under way: the device keeps polling)
        service.honest = True
        _wait_installed(tmp_path / "edge.log", what="the honest download installed")
        assert not list((tmp_path / "repo").glob(".partial-*")), "a dropped download was left behind"
    finally:
        edge.stop()
        server.stop(0)


def test_the_release_service_describes_a_release_once_until_its_manifest_changes(tmp_path, keys, monkeypatch):
    """Every device poll lists every release: its model (from the manifest) and archive size are kept per release
    until the manifest changes; a release whose files are gone is not offered."""
    import os

    from fedge.server import release_service

    state = tmp_path / "state"
    state.mkdir()
    registry = Registry(registry_path(state))
    bundle = make_bundle(tmp_path / "r1", keys[0], "digits", seed=0)
    registry.add_release(1, 1, str(bundle), sha256_file(bundle / "manifest.json"), {})
    servicer = release_service.ReleaseServicer(state)
    reads, real = [], release_service.release_model
    monkeypatch.setattr(release_service, "release_model", lambda row: reads.append(row["id"]) or real(row))

    first = servicer._available(registry.releases())
    again = servicer._available(registry.releases())
    assert [(r.model, r.version, r.archive_bytes) for r, _ in first] == [("digits", 1, len(pack(bundle)))]
    assert again[0][0] == first[0][0] and reads == [1]
    manifest = bundle / "manifest.json"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert servicer._available(registry.releases())[0][0] == first[0][0] and reads == [1, 1]
    shutil.rmtree(bundle)
    assert servicer._available(registry.releases()) == []


def _small_disk(path: Path, size: str) -> None:
    """A filesystem of ``size`` at ``path`` (a tmpfs: needs root, as the network-namespace tests do)."""
    import subprocess

    path.mkdir(parents=True)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {out.stderr.strip()}")


def test_a_release_that_does_not_fit_on_the_disk_is_not_fetched_until_there_is_room(tmp_path, keys):
    """A device whose disk cannot take a release (its archive and the files unpacked beside it) does not download
    it, says once how much room it needs, keeps serving what it has, and installs it at a later poll once there is
    room. `fedge edge install` refuses it the same way."""
    import subprocess

    from tests.edge.bundles import heavy_bundle
    from tests.edge.conftest import digits_request

    disk = tmp_path / "disk"
    _small_disk(disk, "3m")
    server = edge = None
    try:
        repo = disk / "repo"
        small = make_bundle(tmp_path / "r1", keys[0], "digits", seed=0)
        assert fedge("edge", "install", str(small), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
        service = LyingReleaseService(heavy_bundle(tmp_path / "r2", keys[0]), 0)  # 4.5 MB, honest
        service.honest = True
        server, port = _serve_releases(service)
        edge = EdgeProcess(
            repo, keys[1], tmp_path / "edge.log", "--pull", f"127.0.0.1:{port}", "--pull-interval", "0.2"
        )
        log = tmp_path / "edge.log"
        said = "free on the disk holding"
        _wait_for(lambda: said in log.read_text(), what="the device saying it has no room")
        time.sleep(1.5)  # several polls more
        assert service.fetches == 0 and log.read_text().count(said) == 1, log.read_text()
        assert f"needs {(2 * len(service.archive) + (1 << 20)) / 2**20:.1f} MiB free" in log.read_text()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).read().decode()
        assert 'fedge_edge_installs_total{outcome="no_space"} 1.0' in metrics
        out = fedge("edge", "install", str(tmp_path / "r2"), "--repo", str(repo), "--trust", str(keys[1]))
        assert out.returncode == 2 and said in out.stderr and "nothing installed" in out.stderr, out.stderr
        assert sorted(p.name for p in repo.rglob("*") if p.is_dir()) == ["1", "digits"]  # no staging left behind
        assert not list(repo.glob("*.tar"))
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert _serves(stub, digits_request(), "1")
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # room is made
            _wait_for(lambda: _serves(stub, digits_request(), "2"), what="the release installed once there is room")
        assert service.fetches == 1
    finally:
        if edge is not None:
            edge.stop()
        if server is not None:
            server.stop(0)
        subprocess.run(["umount", str(disk)], check=False)


def test_a_damaged_copy_of_the_offered_release_is_reported_as_not_served_and_downloaded_again(tmp_path, keys):
    """The device restarts with its copy of the newest release damaged (it serves the version before, see
    test_readiness): it tells the coordinator what it really serves, and instead of taking the damaged copy for
    the release it downloads the release again and serves it."""
    from tests.edge.conftest import digits_request

    repo = tmp_path / "repo"
    r2 = make_bundle(tmp_path / "r2", keys[0], "digits", seed=1)
    for bundle in (make_bundle(tmp_path / "r1", keys[0], "digits", seed=0), r2):
        assert fedge("edge", "install", str(bundle), "--repo", str(repo), "--trust", str(keys[1])).returncode == 0
    model = repo / "digits" / "2" / "model.fp32.onnx"
    model.write_bytes(model.read_bytes()[:-7] + b"damaged")
    service = LyingReleaseService(r2, 0)
    service.honest = True
    server, port = _serve_releases(service)
    edge = EdgeProcess(repo, keys[1], tmp_path / "edge.log", "--pull", f"127.0.0.1:{port}", "--pull-interval", "0.3")
    try:
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            _wait_for(lambda: _serves(stub, digits_request(), "3"), what="the release downloaded again and served")
        assert service.reports[0] == {"digits": 1}, service.reports[:3]  # not the damaged CURRENT
        _wait_for(lambda: service.reports[-1] == {"digits": 3}, what="the device reporting the new copy")
        assert service.fetches == 1
        assert "local version 2 of release digits v1 is damaged" in (tmp_path / "edge.log").read_text()
    finally:
        edge.stop()
        server.stop(0)


@pytest.mark.parametrize("resumes", [False, True])
def test_what_a_cut_download_left_is_replaced_when_it_cannot_be_resumed_or_does_not_verify(tmp_path, keys, resumes):
    """The device holds the first 1000 bytes of a release from a cut download, damaged. A service that does not
    resume sends the whole archive, which replaces them; one that does sends the rest, the pieced archive does not
    verify, and the device fetches it whole at the next poll instead of refusing the release."""
    bundle = make_bundle(tmp_path / "r1", keys[0], "digits", seed=0)
    service = LyingReleaseService(bundle, 0)
    service.honest, service.resumes = True, resumes
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / f".partial-digits-{service.manifest_sha256[:16]}.tar").write_bytes(bytes(1000))
    server, port = _serve_releases(service)
    edge = EdgeProcess(repo, keys[1], tmp_path / "edge.log", "--pull", f"127.0.0.1:{port}", "--pull-interval", "0.3")
    try:
        _wait_installed(tmp_path / "edge.log", what="the release installed")
        log = (tmp_path / "edge.log").read_text()
        assert "resuming release digits v1 at byte 1000" in log, log
        if resumes:
            assert service.fetches == 2 and service.sent == [len(service.archive) - 1000, len(service.archive)]
            assert "resumed at byte 1000 does not verify" in log and "refused" not in log, log
        else:
            assert service.fetches == 1 and "the release service sent release digits v1 from its start" in log, log
        assert not list(repo.glob(".partial-*"))
    finally:
        edge.stop()
        server.stop(0)


class HostileListing(release_pb2_grpc.ReleaseServiceServicer):
    """Lists releases whose model name is a path and whose manifest sha256 is not one."""

    fetches = 0

    def ListReleases(self, request, context):
        return release_pb2.ListReleasesResponse(
            releases=[
                release_pb2.Release(model="../escape", version=1, manifest_sha256="0" * 64, archive_bytes=1000),
                release_pb2.Release(model="digits", version=1, manifest_sha256="../../escape", archive_bytes=1000),
            ]
        )

    def FetchRelease(self, request, context):
        self.fetches += 1
        yield release_pb2.ReleaseChunk(data=bytes(1000))


def test_a_listing_naming_paths_is_refused_and_nothing_is_written_outside_the_repository(tmp_path, keys):
    service = HostileListing()
    server, port = _serve_releases(service)
    (tmp_path / "device").mkdir()
    edge = EdgeProcess(
        tmp_path / "device" / "repo",
        keys[1],
        tmp_path / "edge.log",
        "--pull",
        f"127.0.0.1:{port}",
        "--pull-interval",
        "0.2",
    )
    try:
        _wait_for(lambda: (tmp_path / "edge.log").read_text().count(": refused") >= 2, what="both releases refused")
        time.sleep(1)  # several polls more
        log = (tmp_path / "edge.log").read_text()
        assert "release '../escape' v1 has the model name '../escape', not a plain directory name: refused" in log
        assert "release 'digits' v1 has the manifest sha256 '../../escape', not 64 hex digits: refused" in log
        assert log.count(": refused") == 2  # said once each
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).read().decode()
        assert 'fedge_edge_installs_total{outcome="refused"} 2.0' in metrics
    finally:
        edge.stop()
        server.stop(0)
    assert service.fetches == 0
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == ["repo"]
    assert not [p for p in (tmp_path / "device" / "repo").iterdir() if p.name != ".engines"], list(
        (tmp_path / "device" / "repo").iterdir()
    )


def test_a_rate_limited_device_downloads_no_faster_than_its_limit(tmp_path, keys):
    """--pull-max-rate 64k against a 164 kB release: the fetch takes at least (size - one 64 KiB flow-control
    window) / rate, where an unlimited one on loopback takes milliseconds; the release still installs and
    serves."""
    fed, bundle = _offering_release_1(tmp_path, keys)
    edge = None
    try:
        edge = EdgeProcess(
            tmp_path / "repo", keys[1], tmp_path / "edge.log", *pull_flags(fed), "--pull-max-rate", "64k"
        )
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        req.raw_input_contents.append(np.zeros((1, 1, 8, 8), np.float32).tobytes())
        with grpc.insecure_channel(edge.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            _wait_for(lambda: _serves(stub, req, "1"), what="release 1 pulled at 64 kB/s and served")
        m = re.search(
            r"fetched release digits v1: (\d+) bytes in ([\d.]+) s \((\d+) kB/s, limit 64 kB/s\)",
            (tmp_path / "edge.log").read_text(),
        )
        assert m, (tmp_path / "edge.log").read_text()[-2000:]
        size, took = int(m.group(1)), float(m.group(2))
        assert size == archive_bytes(bundle) and took >= (size - 65536) / 64_000, (size, took)
        assert int(m.group(3)) <= 64
    finally:
        if edge is not None:
            edge.stop()
        fed.stop_all()
