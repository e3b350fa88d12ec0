"""TLS for the edge runtime's gRPC and HTTP endpoints (Triton's ``--grpc-use-ssl``/``--grpc-use-ssl-mutual``) and
for the clients that dial them. Files are checked up front, so a wrong path, a key that is not the certificate's or an
encrypted key fails ``fedge edge serve`` at start with the file named, not every client at its first handshake."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedge.edge_runtime.common.errors import TLSConfigError

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _certificates(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, what)
    try:
        return data, x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(f"the {what} {path} holds no PEM certificate ({exc})") from exc


def _key_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    """(certificate chain, private key) as PEM, checked to belong together."""
    chain, certs = _certificates(cert_path, "certificate")
    key = _read(key_path, "private key")
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError as exc:  # encrypted: gRPC cannot prompt for a passphrase
        raise TLSConfigError(f"the private key {key_path} is encrypted; give an unencrypted PEM key") from exc
    except ValueError as exc:
        raise TLSConfigError(f"the private key {key_path} is not a PEM private key ({exc})") from exc
    if private.public_key().public_bytes(*_SPKI) != certs[0].public_key().public_bytes(*_SPKI):
        raise TLSConfigError(f"the private key {key_path} does not belong to the certificate {cert_path}")
    return chain, key


@dataclass(frozen=True)
class ServerTLS:
    cert: Path  # PEM certificate (chain) clients verify, with the names they dial
    key: Path  # its unencrypted PEM private key
    client_ca: Path | None = None  # set: mutual TLS, clients must present a certificate this CA signed

    def credentials(self) -> grpc.ServerCredentials:
        chain, key = _key_pair(self.cert, self.key)
        ca = _certificates(self.client_ca, "client CA")[0] if self.client_ca else None
        return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """The same certificate (and client CA) for the HTTP endpoint."""
        _key_pair(self.cert, self.key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            _certificates(self.client_ca, "client CA")
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=self.client_ca)
        return ctx

    def describe(self) -> str:
        return "TLS, client certificates required" if self.client_ca else "TLS"


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """A client's side: ``ca`` verifies the server (None: the system's roots); ``cert``/``key`` answer a server
    that wants client certificates."""
    if (cert is None) != (key is None):
        raise TLSConfigError("a client certificate needs its key and a key its certificate (give both or neither)")
    root = _certificates(ca, "CA certificate")[0] if ca else None
    chain, private = _key_pair(cert, key) if cert and key else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private, certificate_chain=chain)
