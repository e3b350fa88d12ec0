"""The response cache (Triton's ``--cache-config local,size=BYTES``): answers of identical requests, kept up to a
byte budget and dropped least recently used first.

A request's key hashes the model's name and version, every input's name, datatype, shape and contents, and the
outputs it asks for (with their classification count), so a new model version never answers from an old one's
entries (they are dropped when it swaps in). Values are the response's tensors, copied; each request still gets
its own id in the answer. Used from the event loop and told of swaps from the loader thread, hence the lock.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError

SCHEME = "local"  # Triton's in-memory cache; the only one fedge has


def parse_config(settings: list[str]) -> int:
    """``--cache-config`` values (Triton's ``local,size=BYTES``, repeatable) -> the cache's size in bytes (0: no
    cache)."""
    size = 0
    for s in settings:
        name, _, setting = s.partition(",")
        key, _, value = setting.partition("=")
        if name != SCHEME or key != "size":
            raise ConfigError(f"--cache-config {s!r}: fedge has only Triton's local cache: local,size=BYTES")
        if not value.isdigit():
            raise ConfigError(f"--cache-config {s!r}: the size must be a number of bytes")
        size = int(value)
    return size


def _nbytes(a: np.ndarray) -> int:
    return sum(len(x) for x in a.flat) + 8 * a.size if a.dtype == object else a.nbytes


def request_key(model: str, version: int, inputs: dict[str, np.ndarray], wanted: dict[str, int]) -> bytes:
    """``wanted``: output name -> classification count (0: the tensor itself)."""
    h = hashlib.blake2b(digest_size=32)
    h.update(f"{model}\0{version}\0{sorted(wanted.items())}\0".encode())
    for name in sorted(inputs):
        a = inputs[name]
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        if a.dtype == object:  # BYTES: each element length-prefixed
            for x in a.flat:
                b = x if isinstance(x, bytes) else str(x).encode()
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
        else:
            h.update(np.ascontiguousarray(a).data)
    return h.digest()


class ResponseCache:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise ConfigError("a response cache needs a size > 0 bytes")
        self.capacity = capacity_bytes
        self._entries: OrderedDict[bytes, tuple[str, dict[str, np.ndarray], int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: bytes, model: str, outputs: dict[str, np.ndarray]) -> bool:
        """Store a copy of ``outputs``; False if the answer alone is larger than the cache."""
        kept = {name: np.array(a, copy=True) for name, a in outputs.items()}
        size = len(key) + sum(_nbytes(a) for a in kept.values())
        if size > self.capacity:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            while self._entries and self.bytes + size > self.capacity:
                _, (_, _, freed) = self._entries.popitem(last=False)
                self.bytes -= freed
                self.evictions += 1
            self._entries[key] = (model, kept, size)
            self.bytes += size
        return True

    def drop_model(self, model: str) -> int:
        """Forget every answer of ``model`` (a new version swapped in); returns how many."""
        with self._lock:
            gone = [k for k, (m, _, _) in self._entries.items() if m == model]
            for k in gone:
                self.bytes -= self._entries.pop(k)[2]
        return len(gone)
