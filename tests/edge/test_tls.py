"""TLS on the edge runtime's gRPC and HTTP endpoints: server-only and mutual, driven over the wire by
tritonclient.grpc and `fedge edge predict`, with certificates from `fedge certs init` / `fedge certs issue`; bad
files refused at start."""

import http.client
import json
import ssl
from pathlib import Path

import numpy as np
import pytest

from tests.edge.conftest import fedge, serving, triton_script


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with an edge server certificate and a client certificate, and a second CA's client certificate."""
    root = tmp_path_factory.mktemp("pki")
    for args in (
        ("certs", "init", "--out", str(root / "ca")),
        ("certs", "issue", "edge-1", "--certs", str(root / "ca"), "--hosts", "edge-1.local"),
        ("certs", "issue", "camera-7", "--certs", str(root / "ca"), "--client"),
        ("certs", "init", "--out", str(root / "other")),
        ("certs", "issue", "stranger", "--certs", str(root / "other"), "--client"),
    ):
        out = fedge(*args)
        assert out.returncode == 0, out.stderr
    return root


def _tls_flags(pki, mutual: bool) -> tuple[str, ...]:
    ca = pki / "ca"
    flags = ("--tls-cert", str(ca / "edge-1.pem"), "--tls-key", str(ca / "edge-1.key"))
    return flags + (("--tls-client-ca", str(ca / "ca.crt")) if mutual else ())


@pytest.fixture(scope="module")
def mutual_server(tmp_path_factory, keys, digits_bundle, pki):
    yield from serving(tmp_path_factory.mktemp("mtls"), keys, (digits_bundle,), *_tls_flags(pki, mutual=True))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, keys, digits_bundle, pki):
    yield from serving(tmp_path_factory.mktemp("tls"), keys, (digits_bundle,), *_tls_flags(pki, mutual=False))


@pytest.fixture(scope="module")
def metrics_tls_server(tmp_path_factory, keys, digits_bundle, pki):
    yield from serving(
        tmp_path_factory.mktemp("mtls-metrics"), keys, (digits_bundle,), *_tls_flags(pki, mutual=True), "--metrics-tls"
    )


@pytest.fixture
def x_npy(tmp_path):
    x = np.random.default_rng(5).random((2, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


def test_tritonclient_over_mutual_tls_only_with_a_certificate_from_the_ca(mutual_server, pki, x_npy):
    ca = pki / "ca"
    r = triton_script(
        "tests.edge.triton_tls_check",
        mutual_server.url,
        str(x_npy),
        str(ca / "ca.crt"),
        str(ca / "camera-7.pem"),
        str(ca / "camera-7.key"),
        str(pki / "other" / "stranger.pem"),
        str(pki / "other" / "stranger.key"),
    )
    assert r["mutual"]["live"] is True and np.array(r["mutual"]["logits"]).shape == (2, 10)
    for refused in ("no_client_cert", "stranger", "plaintext"):
        assert r[refused].get("error") == "StatusCode.UNAVAILABLE", (refused, r[refused])


def test_fedge_edge_predict_over_tls(tls_server, mutual_server, pki, x_npy):
    ca = pki / "ca"
    base = ("edge", "predict", "--model", "digits", "--npy", str(x_npy))
    one_way = fedge(*base, "--url", tls_server.url, "--tls-ca", str(ca / "ca.crt"))
    assert one_way.returncode == 0, one_way.stderr
    mutual = fedge(
        *base,
        "--url",
        mutual_server.url,
        "--tls-ca",
        str(ca / "ca.crt"),
        "--tls-cert",
        str(ca / "camera-7.pem"),
        "--tls-key",
        str(ca / "camera-7.key"),
    )
    assert mutual.returncode == 0, mutual.stderr
    # the same model (same bundle) behind both servers gives the same answer
    np.testing.assert_allclose(json.loads(one_way.stdout)["logits"], json.loads(mutual.stdout)["logits"], rtol=1e-6)
    plaintext = fedge(*base, "--url", tls_server.url)
    assert plaintext.returncode == 2 and "UNAVAILABLE" in plaintext.stderr
    wrong_ca = fedge(*base, "--url", tls_server.url, "--tls-ca", str(pki / "other" / "ca.crt"))
    assert wrong_ca.returncode == 2 and "UNAVAILABLE" in wrong_ca.stderr


@pytest.mark.parametrize(
    "case", ["key_of_another_cert", "missing_key", "not_a_certificate", "key_without_cert", "metrics_tls_without_tls"]
)
def test_serve_refuses_unusable_tls_files_at_start(case, pki, keys, tmp_path):
    ca = pki / "ca"
    (tmp_path / "junk.pem").write_text("hello\n")
    flags = {
        "key_of_another_cert": ("--tls-cert", str(ca / "edge-1.pem"), "--tls-key", str(ca / "camera-7.key")),
        "missing_key": ("--tls-cert", str(ca / "edge-1.pem"), "--tls-key", str(tmp_path / "nope.key")),
        "not_a_certificate": ("--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(ca / "edge-1.key")),
        "key_without_cert": ("--tls-key", str(ca / "edge-1.key")),
        "metrics_tls_without_tls": ("--metrics-tls",),
    }[case]
    expected = {
        "key_of_another_cert": f"the private key {ca / 'camera-7.key'} does not belong to the certificate",
        "missing_key": f"cannot read the private key {tmp_path / 'nope.key'}",
        "not_a_certificate": f"the certificate {tmp_path / 'junk.pem'} holds no PEM certificate",
        "key_without_cert": "TLS needs --tls-cert and --tls-key together",
        "metrics_tls_without_tls": "--metrics-tls serves the metrics endpoint with the server's certificate",
    }[case]
    out = fedge(
        "edge",
        "serve",
        "--repo",
        str(tmp_path / "repo"),
        "--trust",
        str(keys[1]),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        *flags,
        timeout=60,
    )
    assert out.returncode == 2 and expected in out.stderr, out.stderr


def test_issued_certificates_name_what_they_are_for(pki):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    server = x509.load_pem_x509_certificate((pki / "ca" / "edge-1.pem").read_bytes())
    client = x509.load_pem_x509_certificate((pki / "ca" / "camera-7.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((pki / "ca" / "ca.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge-1.local" in san.get_values_for_type(x509.DNSName)
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    client.verify_directly_issued_by(ca)
    assert oct((pki / "ca" / "camera-7.key").stat().st_mode & 0o777) == "0o600"


def _https_ready(
    port: int, ca: Path, cert: Path | None = None, key: Path | None = None, path: str = "/v2/health/ready"
) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_http_endpoint_uses_the_same_tls(tls_server, mutual_server, pki):
    ca = pki / "ca"
    assert _https_ready(tls_server.http_port, ca / "ca.crt") == 200
    assert _https_ready(mutual_server.http_port, ca / "ca.crt", ca / "camera-7.pem", ca / "camera-7.key") == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):  # no client certificate: refused in the handshake
        _https_ready(mutual_server.http_port, ca / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):  # a server this CA did not sign is not trusted
        _https_ready(tls_server.http_port, pki / "other" / "ca.crt")
    plain = http.client.HTTPConnection("127.0.0.1", tls_server.http_port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):  # plaintext to a TLS port gets no answer
        plain.request("GET", "/v2/health/ready")
        plain.getresponse()
    plain.close()
    assert _https_ready(tls_server.http_port, ca / "ca.crt") == 200  # and the server is still there
    out = fedge(
        "edge",
        "predict",
        "--url",
        f"https://127.0.0.1:{mutual_server.http_port}",
        "--model",
        "digits",
        "--text",
        "x",
        "--tls-ca",
        str(ca / "ca.crt"),
        "--tls-cert",
        str(ca / "camera-7.pem"),
        "--tls-key",
        str(ca / "camera-7.key"),
    )
    assert out.returncode == 2 and "expected FP32" in out.stderr  # reached the model over mutual TLS: a text
    out = fedge(
        "edge",
        "predict",
        "--url",
        f"https://127.0.0.1:{mutual_server.http_port}",
        "--model",
        "digits",
        "--text",
        "x",
        "--tls-ca",
        str(ca / "ca.crt"),
    )  # ... which is refused without a certificate
    assert out.returncode == 2 and "fedge edge predict: UNAVAILABLE: no answer from https://" in out.stderr


def test_metrics_follow_the_servers_tls_with_metrics_tls(tls_server, metrics_tls_server, pki):
    """Plain HTTP by default, as Triton's; with --metrics-tls the scraper verifies the server's certificate and,
    with --tls-client-ca, must present one that CA signed (Prometheus' tls_config cert_file/key_file)."""
    import urllib.request

    ca, port = pki / "ca", metrics_tls_server.metrics_port
    plain = urllib.request.urlopen(f"http://127.0.0.1:{tls_server.metrics_port}/metrics", timeout=10).read()
    assert b"fedge_edge_requests_total" in plain
    assert _https_ready(port, ca / "ca.crt", ca / "camera-7.pem", ca / "camera-7.key", "/metrics") == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):  # no client certificate
        _https_ready(port, ca / "ca.crt", path="/metrics")
    with pytest.raises((ssl.SSLError, ConnectionError)):  # a certificate another CA signed
        _https_ready(port, ca / "ca.crt", pki / "other" / "stranger.pem", pki / "other" / "stranger.key", "/metrics")
    with pytest.raises(ssl.SSLCertVerificationError):  # the scraper does not trust a server another CA signed
        _https_ready(port, pki / "other" / "ca.crt", ca / "camera-7.pem", ca / "camera-7.key", "/metrics")
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):  # plaintext gets no metrics
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    import socket

    with socket.create_connection(("127.0.0.1", port)):  # a client that connects and never shakes hands ...
        # ... holds up no one (prometheus_client's own TLS server would wait on it: the scrape timed out)
        assert _https_ready(port, ca / "ca.crt", ca / "camera-7.pem", ca / "camera-7.key", "/metrics") == 200
