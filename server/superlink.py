"""Runs Flower's SuperLink with refused TLS connections written to its log.

A plaintext client, or one whose CA bundle does not match the coordinator's certificate, fails in the TLS
handshake, before any Flower code runs; Python's SSL transport reports that only in asyncio debug mode, so
the coordinator's log showed nothing. This wrapper runs uvicorn on the standard asyncio loop (not uvloop,
whose SSL layer cannot be observed) and logs every failed handshake as a warning naming the peer and the
reason. The ``flwr-serverapp`` process of each run is forked from a pre-imported parent (``fedge.core.warm_exec``)
instead of importing flwr, torch and the round loop afresh. Everything else is Flower's own ``flower-superlink``.

Usage: ``python -m server.superlink <flower-superlink arguments>``
"""

from __future__ import annotations

import logging

log = logging.getLogger("flwr")


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


def _probe(exc) -> bool:
    """A TCP connection closed before any TLS was spoken (a port check or load-balancer probe), not a client
    being refused; asyncio reports it as the ConnectionResetError class itself."""
    return exc is ConnectionResetError or isinstance(exc, ConnectionResetError)


def log_refused_handshakes() -> bool:
    """Wrap asyncio's SSL protocol so a failed server-side handshake is logged; False where this Python's
    asyncio lacks the hook (nothing is changed then)."""
    import asyncio.sslproto as sslproto

    original = getattr(sslproto.SSLProtocol, "_on_handshake_complete", None)
    if original is None:
        return False

    def on_handshake_complete(self, handshake_exc):
        if handshake_exc is not None and not _probe(handshake_exc) and getattr(self, "_server_side", True):
            transport = getattr(self, "_transport", None)
            peer = transport.get_extra_info("peername") if transport is not None else None
            host = f"{peer[0]}:{peer[1]}" if peer else "an unknown peer"
            log.warning("refused a TLS connection from %s: handshake failed (%s)", host, _describe(handshake_exc))
        return original(self, handshake_exc)

    sslproto.SSLProtocol._on_handshake_complete = on_handshake_complete  # type: ignore[method-assign]  # patched
    return True


# what a ServerApp process imports (server.server_app loads the round loop and torch lazily)
WARM_MODULES = [
    "flwr.superlink.cli",
    "fedge.server.server_app",
    "fedge.server.round_loop",
    "fedge.server.jobs",
    "torch",
    "fedge.core.tasks",
]


def main() -> None:
    import uvicorn
    from flwr.superlink.cli import flower_superlink

    from fedge.core.warm_exec import SuperExecStarter, patch_subprocess

    patch_subprocess("flwr.superlink.cli.flower_superlink", SuperExecStarter(WARM_MODULES))

    if log_refused_handshakes():
        run = uvicorn.run

        def run_on_asyncio(*args, **kwargs):
            kwargs.setdefault("loop", "asyncio")
            return run(*args, **kwargs)

        uvicorn.run = run_on_asyncio
    flower_superlink()


if __name__ == "__main__":
    main()
