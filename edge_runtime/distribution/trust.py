"""The trust file a server was started with (``--trust``), followed while it serves.

Rotating the release signing key means giving every device a trust file with the old and the new key. A server
reads the file again when it changes (its size, mtime or inode), at the next bundle it verifies, so devices take
the new key without a restart. A replacement that does not load (no key, another kind of key, a file missing or
half written) changes nothing: the keys read last stay, and the problem is logged once per version of the file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fedge.edge_runtime.common.errors import BundleError
from fedge.edge_runtime.distribution.bundle import TrustedKeys, load_public_key

log = logging.getLogger("fedge.edge")


class TrustFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self._keys = load_public_key(self.path)  # a bad file fails at start, before anything serves
        self._refused: tuple | None = None
        self._lock = threading.Lock()

    def _stat(self) -> tuple:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> TrustedKeys:
        try:
            stamp = self._stat()
        except OSError as exc:
            return self._keep(("missing",), f"cannot read it ({exc.strerror})")
        if stamp == self._stamp:
            return self._keys
        with self._lock:
            try:
                keys = load_public_key(self.path)
            except (BundleError, ValueError, OSError) as exc:
                return self._keep(stamp, str(exc))
            log.info("trust file %s changed: releases now verify against its %d key(s)", self.path, len(keys.keys))
            self._keys, self._stamp, self._refused = keys, stamp, None
            return keys

    def _keep(self, stamp: tuple, why: str) -> TrustedKeys:
        if stamp != self._refused:
            self._refused = stamp
            log.error(
                "trust file %s: %s; still trusting the %d key(s) read before", self.path, why, len(self._keys.keys)
            )
        return self._keys

    @property
    def keys(self) -> tuple:
        return self.current().keys

    def verify(self, signature: bytes, data: bytes) -> None:
        self.current().verify(signature, data)
