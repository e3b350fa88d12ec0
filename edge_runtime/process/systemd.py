"""systemd's service protocol, for ``fedge edge serve`` run as a ``Type=notify`` unit (deploy/fedge-edge.service):
READY=1 once the server answers (its models loaded), with a STATUS line; STOPPING=1 when a stop signal starts the
drain; and under ``WatchdogSec=``, WATCHDOG=1 every half interval while the server's event loop answers, so that
systemd restarts a server that is alive but no longer serves (a hung loop).

The protocol is one datagram per message to the unix socket NOTIFY_SOCKET names ("@..." for the abstract
namespace); no libsystemd is needed. Without NOTIFY_SOCKET nothing is sent."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("fedge.edge")


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())  # a watchdog set for another process is not ours
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._stop = threading.Event()
        self._failed = False

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` ("READY=1", "STATUS=...") as one message; False if there is no socket or it failed."""
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto("\n".join(lines).encode(), self.address)
                return True
            except OSError as exc:
                if not self._failed:  # said once: a missing socket would otherwise fill the log
                    log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc.strerror)
                self._failed = True
                return False

    def keep_alive(self, responsive: Callable[[float], bool]) -> None:
        """Under systemd's watchdog, ping every half interval while ``responsive(half interval)`` says the server
        answers; silence otherwise, which is what makes systemd restart it."""
        if self.watchdog_s is None or not self.address:
            return
        every = self.watchdog_s / 2

        def loop() -> None:
            while not self._stop.wait(every):
                if responsive(every):
                    self.notify("WATCHDOG=1")
                else:
                    log.error("the server's event loop did not answer within %.1f s: no watchdog ping", every)

        threading.Thread(target=loop, name="fedge-watchdog", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
