"""``fedge certs init``: a private CA, the coordinator's TLS certificate and one SuperNode key pair per client;
``fedge certs issue``: more certificates from that CA (an edge server's, its clients' for mutual TLS).

Flower's SuperNode authentication wants ECDSA keys on a NIST curve in OpenSSH format; the coordinator's TLS
certificate carries a SAN for every host customers dial plus localhost/127.0.0.1/::1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertPaths:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    def client_dir(self, name: str) -> Path:
        """What a customer receives: ca.crt plus its SuperNode key pair (supernode.key, supernode.key.pub)."""
        return self.dir / "clients" / name

    def exists(self) -> bool:
        return self.ca.exists() and self.server_cert.exists() and self.server_key.exists()


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedge"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for h in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            entries.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(entries)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))


def _issue(ca: x509.Certificate, ca_key, cn: str, hosts: list[str] | None, days: int):
    """A leaf certificate signed by the CA: a TLS server's (SAN for ``hosts``) or, with ``hosts=None``, a TLS
    client's (for mutual TLS); returns (certificate, private key)."""
    key = ec.generate_private_key(ec.SECP384R1())
    usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if hosts is None else x509.ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts is not None:
        builder = builder.add_extension(_san(list(hosts)), critical=False)
    return builder.sign(ca_key, hashes.SHA384()), key


def init_certs(out: Path, hosts: Sequence[str] = (), clients: int = 0, days: int = 825) -> CertPaths:
    paths = CertPaths(Path(out))
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(_name("fedge CA"))
        .issuer_name(_name("fedge CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    cert, key = _issue(ca, ca_key, "fedge coordinator", list(hosts), days)
    _write(paths.ca, ca.public_bytes(serialization.Encoding.PEM))
    _write(paths.ca_key, _pem_key(ca_key), private=True)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.server_key, _pem_key(key), private=True)
    for i in range(clients):
        make_client_bundle(paths, f"client-{i}")
    return paths


def issue_cert(
    paths: CertPaths, name: str, out: Path, hosts: Sequence[str] | None = (), days: int = 825
) -> tuple[Path, Path]:
    """``fedge certs issue``: a certificate from the same CA for another TLS endpoint, such as an edge server
    (``hosts``: the names and IPs its clients dial, besides localhost) or, with ``hosts=None``, one of its clients
    (mutual TLS). Writes ``out/NAME.pem`` and ``out/NAME.key``; returns their paths."""
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    cert, key = _issue(ca, ca_key, name, None if hosts is None else list(hosts), days)
    cert_path, key_path = Path(out) / f"{name}.pem", Path(out) / f"{name}.key"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _pem_key(key), private=True)
    return cert_path, key_path


def make_client_bundle(paths: CertPaths, name: str) -> Path:
    d = paths.client_dir(name)
    make_client_key(d / "supernode.key")
    _write(d / "ca.crt", paths.ca.read_bytes())
    return d


def make_client_key(path: Path) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in OpenSSH format: ``path`` (private) and ``path.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        private=True,
    )
    pub = path.with_name(path.name + ".pub")
    _write(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return path, pub
