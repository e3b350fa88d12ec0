"""Warm Flower app processes: each ClientApp/ServerApp process is forked from a parent that has already imported
flwr, torch and fedge, instead of starting Python from nothing.

Flower 1.41's SuperExec starts a fresh ``flwr-clientapp`` process for every message a SuperNode receives (Flower's
warm executor pools exist only for its Kubernetes executor). Importing flwr, torch and the task code costs 1.2 s
(a SecAgg+ key-exchange stage) to 4 s (a DP-SGD round) of CPU per message, on every customer, every round.

Here the SuperExec runs with a *zygote* beside it: a process started once, which imports those modules and then
forks one child per launch. The child runs Flower's own console-script entry point (``flwr-clientapp``) with the
arguments Flower built, so everything after the fork is Flower's unchanged path, and it is still one fresh process
per message: nothing a message leaves behind reaches the next one. Only the imports are shared, copy-on-write.

Wiring, by wrapping rather than forking Flower (as ``client/supernode.py`` does for its poll interval):
- ``python -m fedge.core.warm_exec MODULES -- ARGS`` runs ``flower-superexec ARGS`` with the zygote; the
  ``subprocess`` that Flower's ``SubprocessExecutor`` calls is replaced by :class:`ForkingLauncher`, which passes
  warm commands to the zygote and everything else (and every launch while no zygote is up) to ``subprocess``.
- :func:`superexec_command` rewrites the ``flower-superexec`` command a SuperNode or SuperLink starts.

The child reseeds numpy's and torch's global generators (``random`` reseeds itself after a fork), so forked
processes do not share random streams; fedge's DP noise is drawn from the OS's CSPRNG in any case.
``FEDGE_WARM_APPS=0`` turns all of this off (Flower's cold start per message).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import traceback

log = logging.getLogger("flwr")

WARM_COMMANDS = ("flwr-clientapp", "flwr-serverapp")
ENV_SWITCH = "FEDGE_WARM_APPS"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def superexec_command(command: list[str], modules: list[str]) -> list[str]:
    """``flower-superexec ARGS`` -> this module's SuperExec with a zygote importing ``modules`` (unchanged when off)."""
    if not command or os.path.basename(command[0]) != "flower-superexec" or not enabled():
        return command
    return [sys.executable, "-m", "fedge.core.warm_exec", ",".join(modules), "--", *command[1:]]


class _SubprocessStandIn:
    """Replaces the ``subprocess`` module inside one Flower module: ``Popen`` is overridden, the rest delegated."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)


def patch_subprocess(module_name: str, stand_in: _SubprocessStandIn) -> None:
    # by module name: ``import a.b.c as m`` can bind a function that package ``a.b`` exports under the same name
    setattr(importlib.import_module(module_name), "subprocess", stand_in)  # noqa: B010 (a module attribute mypy does not know)


class SuperExecStarter(_SubprocessStandIn):
    """Stands in where a SuperNode or SuperLink starts its ``flower-superexec``."""

    def __init__(self, modules: list[str]) -> None:
        self._modules = modules

    def Popen(self, command, *args, **kwargs):
        return subprocess.Popen(superexec_command(list(command), self._modules), *args, **kwargs)


# ---------------------------------------------------------------- the SuperExec side
class ForkingLauncher(_SubprocessStandIn):
    """Stands in inside Flower's ``SubprocessExecutor``: warm commands go to the zygote."""

    def __init__(self, modules: list[str]) -> None:
        self._modules = modules
        self._zygote: subprocess.Popen | None = None
        self._start_zygote()

    def _start_zygote(self) -> None:
        self._zygote = subprocess.Popen(
            [sys.executable, "-m", "fedge.core.warm_exec", "--zygote", ",".join(self._modules)], stdin=subprocess.PIPE
        )

    def Popen(self, args, stdout=None, stderr=None, **kwargs):
        if args and args[0] in WARM_COMMANDS and self._send(list(args), quiet=stdout == subprocess.DEVNULL):
            return None  # Flower's executor does not keep the handle
        return subprocess.Popen(args, stdout=stdout, stderr=stderr, **kwargs)

    def _send(self, argv: list[str], quiet: bool) -> bool:
        if self._zygote is None or self._zygote.poll() is not None:
            code = None if self._zygote is None else self._zygote.returncode
            log.warning("fedge: warm app launcher exited (code %s); restarting it, this launch starts cold", code)
            self._start_zygote()
            return False
        stdin = self._zygote.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            stdin.write((json.dumps({"argv": argv, "quiet": quiet}) + "\n").encode())
            stdin.flush()
            return True
        except OSError as exc:  # it died between the check and the write
            log.warning("fedge: warm app launcher unreachable (%s); this launch starts cold", exc)
            return False

    def close(self) -> None:
        if self._zygote is not None and self._zygote.poll() is None and self._zygote.stdin is not None:
            self._zygote.stdin.close()  # EOF: the zygote exits; running children finish on their own


def run_superexec(modules: list[str], flower_args: list[str]) -> None:
    from flwr.supercore.cli import flower_superexec

    launcher = ForkingLauncher(modules)
    patch_subprocess("flwr.supercore.superexec.executor.subprocess_executor", launcher)
    sys.argv = ["flower-superexec", *flower_args]
    try:
        flower_superexec()
    finally:
        launcher.close()


# ---------------------------------------------------------------- the zygote
def _entry_point(command: str):
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name=command)
    return ep.load()


def _warm_up(modules: list[str]) -> dict:
    """Import what every launch would import; a module that fails here is left to fail (or not) in the child."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.warning("fedge: warm app launcher could not pre-import %s: %s", name, exc)
    return {command: _entry_point(command) for command in WARM_COMMANDS}


def _reseed() -> None:
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _run_child(entry, argv: list[str], quiet: bool) -> None:
    """In the forked child: become ``argv[0]`` as if started fresh, run it, exit with its code."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        if quiet:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        _reseed()
        sys.argv = argv
        entry()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_zygote(modules: list[str]) -> None:
    """Import, then fork a child per request line on stdin; exit at EOF (the SuperExec is gone)."""
    entries = _warm_up(modules)
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.5)
        _reap()
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            request = json.loads(line)
            argv = request["argv"]
            if os.fork() == 0:
                _run_child(entries[argv[0]], argv, bool(request.get("quiet")))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--zygote"]:
        run_zygote([m for m in argv[1].split(",") if m])
        return
    modules, sep, *flower_args = argv
    if sep != "--":
        raise SystemExit("usage: python -m fedge.core.warm_exec MODULE[,MODULE...] -- FLOWER-SUPEREXEC-ARGS")
    run_superexec([m for m in modules.split(",") if m], flower_args)


if __name__ == "__main__":
    main(sys.argv[1:])
