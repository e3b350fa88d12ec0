"""The model repository on the device: ``ROOT/<model>/<version>/`` holds installed (verified) bundles and
``ROOT/<model>/CURRENT`` names the version to serve.

Installing is a file operation any process can do (``fedge edge install``, the release puller): the bundle is
unpacked into a staging dir, verified (signature against the pinned key, every file's sha256), and only then
renamed into place and made CURRENT. The serving process (fedge.edge_runtime.serving.model_repository)
notices CURRENT change and swaps the new version in.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fedge.edge_runtime.common.errors import BundleError, InvalidInput, ModelNotFound, NoSpace, quoted
from fedge.edge_runtime.distribution.bundle import Verifier, copy_bundle, unpack, verify_bundle

log = logging.getLogger("fedge.edge")
CONFIG_PARAMETER = "the config parameter"  # RepositoryModelLoad's, in errors
CURRENT = "CURRENT"
SPACE_MARGIN = 1 << 20  # left free on the device's disk beyond what an install needs


def model_dirs(root: Path) -> list[Path]:
    """The repository's model folders, by name (staging and temp entries start with a dot); none if no repository."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def versions(model_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.exists()
        else []
    )


def current_version(model_dir: Path) -> int | None:
    try:
        return int((model_dir / CURRENT).read_text().strip())
    except (FileNotFoundError, ValueError):
        vs = versions(model_dir)
        return vs[-1] if vs else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_current(model_dir: Path, version: int) -> None:
    """Atomically, and durably: a power cut leaves the old CURRENT or the new one, never an empty file."""
    tmp = model_dir / f".{CURRENT}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{version}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, model_dir / CURRENT)
    _fsync_dir(model_dir)


MAX_NAME_CHARS = 255  # a model name is a directory name


def valid_model_name(name: str) -> bool:
    """A model name that is one plain directory name in the repository: no path, not hidden, printable, at most
    MAX_NAME_CHARS characters."""
    return (
        0 < len(name) <= MAX_NAME_CHARS
        and name.isprintable()
        and not any(c in name for c in "/\\")
        and not name.startswith(".")
    )


def check_model_name(name: str, version: str = "") -> None:
    """InvalidInput for a name that is not a valid model name, or a version that is not a number, whether or not
    anything of that name exists: a request cannot learn what is on the device's disk from the answer."""
    if not valid_model_name(name):
        raise InvalidInput(
            f"{quoted(name)} is not a valid model name (one plain directory name: no '/', '\\',"
            f" leading '.' or control character, at most {MAX_NAME_CHARS} characters)"
        )
    if version and not (version.isdigit() and version.isascii() and len(version) <= 18):
        raise InvalidInput(f"{quoted(version)} is not a model version (a number)")


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def ensure_space(root: Path, needed: int, what: str) -> None:
    """NoSpace unless the disk holding ``root`` has ``needed`` bytes free (and a margin)."""
    free = shutil.disk_usage(root).free
    if free < needed + SPACE_MARGIN:
        raise NoSpace(
            f"{what} needs {_mib(needed + SPACE_MARGIN)} free on the disk holding {root}, which has"
            f" {_mib(free)}: nothing installed, what is installed keeps serving"
        )


@contextmanager
def disk_full_is_no_space(root: Path, what: str):
    """A write that fills the disk (ENOSPC) becomes NoSpace, saying so; the caller's cleanup still runs."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NoSpace(
            f"{what}: the disk holding {root} filled up: nothing installed, what is installed keeps serving"
        ) from exc


def install_bundle(root: Path, source: Path, trusted: Verifier, keep: int = 3) -> tuple[str, int]:
    """Verify ``source`` (a bundle dir or tar archive) and install it as the model's next CURRENT version.
    Raises BundleError with nothing changed if anything does not check out, NoSpace if it does not fit."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    size = sum(p.stat().st_size for p in source.iterdir() if p.is_file()) if source.is_dir() else source.stat().st_size
    what = f"installing {source.name}"
    ensure_space(root, size, what)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        with disk_full_is_no_space(root, what):
            if source.is_dir():
                copy_bundle(source, staging)
            elif tarfile.is_tarfile(source):
                unpack(source, staging)
            else:
                raise BundleError(f"{source} is neither a bundle directory nor a tar archive")
        manifest = verify_bundle(staging, trusted)
        if not valid_model_name(manifest.model):
            raise BundleError(f"invalid model name {manifest.model!r}")
        model_dir = root / manifest.model
        model_dir.mkdir(exist_ok=True)
        version = (versions(model_dir) or [0])[-1] + 1
        os.rename(staging, model_dir / str(version))  # atomic on one filesystem
        _fsync_dir(model_dir)
        try:
            with disk_full_is_no_space(root, what):
                _write_current(model_dir, version)
        except NoSpace:
            shutil.rmtree(model_dir / str(version), ignore_errors=True)
            raise
        for old in versions(model_dir)[:-keep]:
            if old != version:
                shutil.rmtree(model_dir / str(old), ignore_errors=True)
        return manifest.model, version
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def activate(root: Path, model: str, version: int) -> None:
    """Serve an installed (already verified) version again: a running server switches by itself."""
    model_dir = Path(root) / model
    if version not in versions(model_dir):
        raise ModelNotFound(f"model {model!r} has no installed version {version}")
    _write_current(model_dir, version)


def rollback(root: Path, model: str) -> int:
    model_dir = Path(root) / model
    cur = current_version(model_dir)
    older = [v for v in versions(model_dir) if cur is None or v < cur]
    if not older:
        raise ModelNotFound(f"model {model!r} has no earlier version to roll back to")
    _write_current(model_dir, older[-1])
    return older[-1]
