"""The release bundle: the one artifact that travels from the coordinator to devices.

A bundle is a directory (or a tar archive of one) holding the models, ``manifest.json`` and
``manifest.sig``, a detached Ed25519 signature over the manifest's exact bytes. The manifest lists the
sha256 of every other file. A device trusts a bundle only if the signature verifies against the public key it
pinned and every file hashes to what the manifest says, with no file missing and none extra. The export writes
bundles with :func:`write_bundle`; devices check them with :func:`verify_bundle` before anything is visible.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedge.edge_runtime.common.errors import BundleError
from fedge.edge_runtime.distribution.manifest import FORMAT, MODEL_KINDS, Manifest, TensorDesc

__all__ = [
    "FORMAT",
    "MANIFEST",
    "MODEL_KINDS",
    "SIGNATURE",
    "Manifest",
    "TensorDesc",
    "TrustedKeys",
    "archive_bytes",
    "copy_bundle",
    "generate_keys",
    "load_private_key",
    "load_public_key",
    "pack",
    "pack_chunks",
    "sha256_file",
    "unpack",
    "verify_bundle",
    "write_bundle",
]

MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
MAX_ARCHIVE_BYTES = 2 << 30  # the largest bundle archive a device downloads or unpacks


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- keys -----------------------------------------------------------------------------------------------------
def generate_keys(out: Path) -> tuple[Path, Path]:
    """``fedge keys init``: the coordinator's release signing key (release.key), its public half (release.pub) and
    what devices pin with --trust (trust.pub: that key alone until ``fedge keys rotate`` adds the next)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv, pub = out / "release.key", out / "release.pub"
    priv.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    priv.chmod(0o600)
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (out / "trust.pub").write_bytes(pub.read_bytes())
    return priv, pub


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The release signing keys a device trusts: one, or two while the coordinator rotates its key (a trust file
    holding the old and the new key, so that releases signed by either install during the switch)."""

    keys: tuple[Ed25519PublicKey, ...]

    def current(self) -> TrustedKeys:
        """The keys now: always these (a TrustFile, which follows its file, answers with what it read last)."""
        return self

    def verify(self, signature: bytes, data: bytes) -> None:
        """InvalidSignature unless one of the keys made ``signature``."""
        for key in self.keys:
            try:
                key.verify(signature, data)
                return
            except InvalidSignature:
                continue
        raise InvalidSignature()


def load_public_key(path: Path) -> TrustedKeys:
    """The trust file given by ``--trust``: one or more PEM Ed25519 public keys, one after another."""
    raw = Path(path).read_bytes()
    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", raw, re.S)
    if not blocks:
        raise BundleError(f"{path} holds no PEM public key")
    keys = []
    for i, block in enumerate(blocks, 1):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, Ed25519PublicKey):
            raise BundleError(f"{path}: key {i} of {len(blocks)} is not an Ed25519 public key")
        keys.append(key)
    return TrustedKeys(tuple(keys))


# -- writing and verifying ------------------------------------------------------------------------------------
def write_bundle(directory: Path, manifest: Manifest, signing_key: Ed25519PrivateKey) -> Manifest:
    """Hash every file already in ``directory``, write manifest.json (``manifest`` + the hashes) and its
    signature -> the manifest as written."""
    directory = Path(directory)
    for stale in (MANIFEST, SIGNATURE):
        (directory / stale).unlink(missing_ok=True)
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    manifest = manifest.with_files(files)
    manifest.check()
    data = json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()
    (directory / MANIFEST).write_bytes(data)
    (directory / SIGNATURE).write_bytes(signing_key.sign(data))
    return manifest


class Verifier(Protocol):
    """What checks a signature: TrustedKeys, a TrustFile, one Ed25519PublicKey. Raises InvalidSignature."""

    def verify(self, signature: bytes, data: bytes) -> None: ...


def verify_bundle(directory: Path, trusted: Verifier) -> Manifest:
    """Raise BundleError unless the signature and every file hash check out. Returns the manifest."""
    directory = Path(directory)
    try:
        data = (directory / MANIFEST).read_bytes()
        sig = (directory / SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"bundle {directory} lacks {Path(exc.filename).name}") from None
    try:
        trusted.verify(sig, data)
    except InvalidSignature:
        raise BundleError(
            f"bundle {directory}: signature does not verify against the trusted key"
            f"{'s' if len(getattr(trusted, 'keys', ())) > 1 else ''}"
        ) from None
    try:
        manifest = Manifest.from_json(json.loads(data))
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {directory}: manifest is not JSON ({exc})") from None
    present = {p.name for p in directory.iterdir()} - {MANIFEST, SIGNATURE}
    if present != set(manifest.files):
        raise BundleError(
            f"bundle {directory}: files {sorted(present ^ set(manifest.files))} are missing or not in the manifest"
        )
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"bundle {directory}: {name} is not a regular file")
        if sha256_file(path) != expected:
            raise BundleError(f"bundle {directory}: {name} does not match its sha256 in the manifest")
    return manifest


# -- archives -------------------------------------------------------------------------------------------------
def pack(directory: Path) -> bytes:
    """A bundle directory as an uncompressed tar of its flat files, in memory (see :func:`pack_chunks`)."""
    return b"".join(pack_chunks(directory))


def pack_chunks(directory: Path, chunk_bytes: int = 1 << 20, offset: int = 0) -> Iterator[bytes]:
    """The bundle's tar from byte ``offset`` on, ``chunk_bytes`` at a time (the last chunk shorter), read from disk
    as it goes: what the release service streams, so a fetch holds one chunk in memory, not the whole bundle.
    Regular files only. The archive is the same on every call while the files are (names sorted, whole-second
    mtimes), so a cut download resumes at an offset."""
    buf = bytearray()
    skip = offset
    for piece in _tar_pieces(_archived(directory), chunk_bytes):
        if skip:
            if len(piece) <= skip:
                skip -= len(piece)
                continue
            piece, skip = piece[skip:], 0
        buf += piece
        while len(buf) >= chunk_bytes:
            yield bytes(buf[:chunk_bytes])
            del buf[:chunk_bytes]
    if buf:
        yield bytes(buf)


def archive_bytes(directory: Path) -> int:
    """The size of :func:`pack`'s archive of ``directory``, without building it."""
    total = sum(len(info.tobuf(tarfile.PAX_FORMAT)) + _padded(info.size) for _, info in _archived(directory))
    return _padded(total + 2 * tarfile.BLOCKSIZE, tarfile.RECORDSIZE)


def _archived(directory: Path) -> list[tuple[Path, tarfile.TarInfo]]:
    out = []
    for p in sorted(Path(directory).iterdir()):
        if p.is_file() and not p.is_symlink():
            info = tarfile.TarInfo(p.name)
            st = p.stat()
            info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
            out.append((p, info))
    return out


def _tar_pieces(members: list[tuple[Path, tarfile.TarInfo]], read_bytes: int) -> Iterator[bytes]:
    """A tar archive as tarfile writes one (header, data padded to 512-byte blocks, two empty blocks, padding
    to a whole record), in pieces of at most ``read_bytes`` of file data."""
    total = 0
    for path, info in members:
        header = info.tobuf(tarfile.PAX_FORMAT)
        yield header
        left = info.size
        with open(path, "rb") as f:
            while left:
                data = f.read(min(left, read_bytes))
                if not data:
                    raise BundleError(f"{path} shrank while it was archived")
                left -= len(data)
                yield data
        yield bytes(_padded(info.size) - info.size)
        total += len(header) + _padded(info.size)
    end = total + 2 * tarfile.BLOCKSIZE
    yield bytes(_padded(end, tarfile.RECORDSIZE) - total)


def _padded(n: int, block: int = tarfile.BLOCKSIZE) -> int:
    return -(-n // block) * block


def unpack(archive: Path | bytes, dest: Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Extract into ``dest`` only flat regular files; any path that could leave ``dest`` (absolute, '..',
    nested, links, devices) refuses the whole archive before anything is written."""
    dest = Path(dest)
    src = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    with src, tarfile.open(fileobj=src, mode="r:*") as tar:
        members = tar.getmembers()
        total = 0
        for m in members:
            parts = PurePosixPath(m.name).parts
            if not m.isfile() or len(parts) != 1 or parts[0] in ("..", ".") or m.name.startswith("/") or "\\" in m.name:
                raise BundleError(f"archive entry {m.name!r} is not a plain file at the top level: refused")
            total += m.size
            if total > max_bytes:
                raise BundleError(f"archive expands beyond {max_bytes} bytes: refused")
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            src_file = tar.extractfile(m)
            assert src_file is not None, "a regular file (checked above)"
            with src_file as f, open(dest / m.name, "wb") as out:
                shutil.copyfileobj(f, out)
                out.flush()
                os.fsync(out.fileno())  # on the disk before the install renames it into place
    return dest


def copy_bundle(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in Path(src).iterdir():
        if p.is_file() and not p.is_symlink():
            shutil.copyfile(p, dest / p.name)
    os.sync() if hasattr(os, "sync") else None
