"""The CLI tells the user's mistakes (one line, exit 2) from fedge's bugs (a traceback), by type: every error meant
for the user derives from FedgeUserError; a bare ValueError or KeyError is a bug."""

from __future__ import annotations

import pytest

from fedge.cli import commands
from fedge.cli.errors import is_user_error
from fedge.edge_runtime.common.errors import (
    AddressUnavailable,
    BundleError,
    ConfigError,
    FedgeUserError,
    MissingFileError,
    NoSpace,
    NotFoundError,
)
from fedge.server.runs import RunOutcome


def _run_with(monkeypatch, exc: BaseException) -> int:
    """``fedge run list`` whose handler raises ``exc``."""

    def handler(_args):
        raise exc

    monkeypatch.setattr(commands, "cmd_run_list", handler)
    return commands.main(["run", "list"])


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("--rounds must be >= 1"),
        NotFoundError("no release 7"),
        MissingFileError("no coordinator in /x"),
        BundleError("bad signature"),
        NoSpace("disk full"),
        AddressUnavailable("port taken"),
    ],
)
def test_user_errors_print_one_line(monkeypatch, capsys, exc) -> None:
    assert _run_with(monkeypatch, exc) == 2
    err = capsys.readouterr().err
    assert err == f"fedge: error: {exc}\n" and "Traceback" not in err


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        KeyError("a bug"),
        RuntimeError("a bug"),
        FileNotFoundError("no filename: raised by code, not about a path the user gave"),
    ],
)
def test_other_errors_keep_their_traceback(monkeypatch, exc) -> None:
    with pytest.raises(type(exc)):
        _run_with(monkeypatch, exc)


def test_an_os_error_about_a_named_file_is_the_users(tmp_path) -> None:
    try:
        open(tmp_path / "missing.csv")
    except FileNotFoundError as exc:
        assert is_user_error(exc)


def test_user_errors_keep_the_builtin_types_callers_catch() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(NotFoundError, KeyError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(NoSpace, OSError)
    assert str(NotFoundError("no run 3")) == "no run 3"  # not KeyError's quoted repr
    from fedge.core.tasks.data import DataError
    from fedge.export.gate import GateFailed
    from fedge.server.runs import RunFailed

    assert all(issubclass(c, FedgeUserError) for c in (DataError, GateFailed, RunFailed))


def test_launch_outcome_carries_the_run() -> None:
    """``runs.launch`` returns the run it started (its id and how it ended), not only an exit code."""
    done, failed = RunOutcome(4, "completed"), RunOutcome(5, "failed", "only 1 client(s) connected")
    assert (done.run_id, done.ok, done.exit_code) == (4, True, 0)
    assert (failed.run_id, failed.ok, failed.exit_code, failed.reason) == (5, False, 1, "only 1 client(s) connected")
