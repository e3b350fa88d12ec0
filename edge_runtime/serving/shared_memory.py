"""Triton's system shared memory extension: a client on the same host registers a POSIX shared memory object
(``shm_open``, i.e. a file in /dev/shm) as a named region, then passes tensors by region, offset and size instead
of inside the request; outputs can be written into a region the same way.

Off unless the server runs with ``--allow-client-shm`` (as Triton, which turned it off by default in 2026), and
even then only for clients on this host (a loopback or unix-socket peer): a region lets its client have the
server read and write a memory object the server's user can open, which no remote client should get.

Reads and writes go through pread/pwrite on a file descriptor, never through a mapping, so a client that shrinks
its object after registering gets INVALID_ARGUMENT instead of a SIGBUS that would kill the server. Every call
runs on the server's event loop: a region cannot be closed between a request's lookup and its read or write."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedge.edge_runtime.common.datatypes import BYTES, datatype_of, serialize_bytes
from fedge.edge_runtime.common.errors import AlreadyExists, InvalidInput, PermissionDenied, RegionNotFound, TooLarge

log = logging.getLogger("fedge.edge")
SHM_DIR = Path("/dev/shm")  # where Linux (glibc's shm_open) keeps POSIX shared memory objects
MAX_REGIONS = 256  # each holds a file descriptor open
OFF = "client shared memory is off on this server; start it with --allow-client-shm to use shared memory regions"


@dataclass(frozen=True)
class ShmRef:
    """Where one tensor lives: the shared_memory_* parameters of an input or a requested output."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class Region:
    name: str
    key: str
    offset: int  # where the region starts in the shared memory object
    byte_size: int
    fd: int


@lru_cache(maxsize=1024)
def is_local_peer(peer: str) -> bool:
    """gRPC's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/run/x.sock") names this host?"""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def object_name(key: str) -> str:
    """A shm_open key ("/camera0") -> the object's file name in SHM_DIR, as glibc resolves it (leading slashes
    dropped; any other slash refused, which also keeps the server inside SHM_DIR)."""
    name = key.lstrip("/")
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidInput(f"shared memory key {key!r} is not a POSIX shared memory name (\"/name\", no other '/')")
    return name


class SharedMemory:
    """The registered regions of one server."""

    def __init__(self, allowed: bool, directory: Path = SHM_DIR) -> None:
        self.allowed, self.directory = allowed, Path(directory)
        self._regions: dict[str, Region] = {}

    # -- registration ----------------------------------------------------------------------------------------
    def register(self, name: str, key: str, offset: int, byte_size: int, peer: str) -> None:
        self.permit(peer)
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        if name in self._regions:
            raise AlreadyExists(f"shared memory region {name!r} is already registered")
        if len(self._regions) >= MAX_REGIONS:
            raise TooLarge(f"{MAX_REGIONS} shared memory regions are registered already; unregister some first")
        if byte_size < 1:
            raise InvalidInput(f"shared memory region {name!r}: byte_size must be >= 1")
        path = self.directory / object_name(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidInput(
                f"unable to register shared memory region {name!r}: no shared memory object {key!r} on this host"
            ) from None
        except OSError as exc:
            raise InvalidInput(
                f"unable to open shared memory object {key!r} for region {name!r}: {exc.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"shared memory object {key!r} is not a memory object")
            if offset + byte_size > st.st_size:
                raise InvalidInput(
                    f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} is past"
                    f" the end of {key!r} ({st.st_size} bytes)"
                )
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = Region(name, key, offset, byte_size, fd)
        log.info("registered shared memory region %s (%s, offset %d, %d bytes)", name, key, offset, byte_size)

    def unregister(self, name: str, peer: str) -> None:
        """One region, or every region when ``name`` is empty; an unknown name is not an error (as Triton)."""
        self.permit(peer)
        for region in [self._regions.pop(name, None)] if name else self._pop_all():
            if region is not None:
                os.close(region.fd)
                log.info("unregistered shared memory region %s", region.name)

    def status(self, name: str = "") -> list[Region]:
        if not name:
            return list(self._regions.values())
        if name not in self._regions:
            raise RegionNotFound(f"no shared memory region {name!r} is registered")
        return [self._regions[name]]

    def close(self) -> None:
        for region in self._pop_all():
            os.close(region.fd)

    def client(self, peer: str) -> ShmClient:
        return ShmClient(self, peer)

    # -- tensors -------------------------------------------------------------------------------------------
    def check(self, ref: ShmRef, tensor: str, peer: str) -> Region:
        """The region of ``ref``, which must lie inside it."""
        self.permit(peer)
        region = self._regions.get(ref.region)
        if region is None:
            raise InvalidInput(f"{tensor}: shared memory region {ref.region!r} is not registered")
        if ref.offset < 0 or ref.byte_size < 0 or ref.offset + ref.byte_size > region.byte_size:
            raise InvalidInput(
                f"{tensor}: offset {ref.offset} + byte_size {ref.byte_size} is outside shared memory"
                f" region {ref.region!r} ({region.byte_size} bytes)"
            )
        return region

    def read(self, ref: ShmRef, tensor: str, peer: str) -> bytes:
        region = self.check(ref, tensor, peer)
        data = os.pread(region.fd, ref.byte_size, region.offset + ref.offset)
        if len(data) != ref.byte_size:
            raise InvalidInput(
                f"{tensor}: shared memory object {region.key!r} is smaller than when region"
                f" {ref.region!r} was registered"
            )
        return data

    def write(self, ref: ShmRef, data: bytes, tensor: str, peer: str) -> None:
        region = self.check(ref, tensor, peer)
        if len(data) > ref.byte_size:
            raise InvalidInput(
                f"{tensor}: {len(data)} bytes of results do not fit the {ref.byte_size} bytes given"
                f" in shared memory region {ref.region!r}"
            )
        view, at = memoryview(data), region.offset + ref.offset
        while view:
            n = os.pwrite(region.fd, view, at)
            view, at = view[n:], at + n

    def permit(self, peer: str) -> None:
        """Client shared memory is on and ``peer`` is on this host, or PermissionDenied."""
        if not self.allowed:
            raise PermissionDenied(OFF)
        if not is_local_peer(peer):
            raise PermissionDenied(f"shared memory is only for clients on this host; {peer} is not")

    def _pop_all(self) -> list[Region]:
        regions, self._regions = list(self._regions.values()), {}
        return regions


@dataclass(frozen=True)
class ShmClient:
    """The regions as one request's client may use them (its peer is checked on first use, not before)."""

    shm: SharedMemory
    peer: str

    def read(self, ref: ShmRef, tensor: str) -> bytes:
        return self.shm.read(ref, tensor, self.peer)

    def check(self, ref: ShmRef, tensor: str) -> None:
        self.shm.check(ref, tensor, self.peer)

    def write(self, ref: ShmRef, data: bytes, tensor: str) -> None:
        self.shm.write(ref, data, tensor, self.peer)

    def write_outputs(self, outputs: dict, to_shm: dict[str, ShmRef]) -> dict[str, tuple[ShmRef, int]]:
        """The outputs the client placed in shared memory, written there in their raw form -> (region, bytes)."""
        placed = {}
        for name, ref in to_shm.items():
            arr = outputs[name]
            data = serialize_bytes(arr) if datatype_of(arr) == BYTES else np.ascontiguousarray(arr).tobytes()
            self.write(ref, data, f"output {name!r}")
            placed[name] = (ref, len(data))
        return placed
