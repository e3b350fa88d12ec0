"""Network namespaces joined by veth pairs, made and removed by the test itself (needs root and `ip`).

One namespace for the coordinator holds a bridge with the coordinator's address; each client gets its own
namespace and a veth pair whose other end is plugged into that bridge. Nothing is routed to or from the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"fedge-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    except RuntimeError as exc:
        return f"this machine does not allow network namespaces with veth pairs ({exc})"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Network:
    """10.231.0.1 is the coordinator; clients get 10.231.0.10, .11, ..."""

    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    subnet: str = "10.231.0"
    namespaces: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # client name -> its veth end on the bridge

    @property
    def coordinator_ns(self) -> str:
        return f"fedge-coord-{self.tag}"

    @property
    def coordinator_ip(self) -> str:
        return f"{self.subnet}.1"

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def start(self) -> Network:
        ns = self.coordinator_ns
        self._add_ns(ns)
        ip("-n", ns, "link", "add", "br0", "type", "bridge")
        ip("-n", ns, "addr", "add", f"{self.coordinator_ip}/24", "dev", "br0")
        ip("-n", ns, "link", "set", "br0", "up")
        return self

    def add_client(self, name: str) -> str:
        """-> the client's namespace, wired to the coordinator's bridge."""
        i = len(self.links)
        ns, bridge_end = f"fedge-{name[:8]}-{self.tag}", f"vb{i}"
        self._add_ns(ns)
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", bridge_end, "netns", self.coordinator_ns)
        ip("-n", ns, "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", self.coordinator_ns, "link", "set", bridge_end, "master", "br0")
        ip("-n", self.coordinator_ns, "link", "set", bridge_end, "up")
        self.links[name] = bridge_end
        return ns

    def cut(self, name: str) -> None:
        ip("-n", self.coordinator_ns, "link", "set", self.links[name], "down")

    def restore(self, name: str) -> None:
        ip("-n", self.coordinator_ns, "link", "set", self.links[name], "up")

    def stop(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
