"""Which exceptions are the user's to fix (printed as one line) rather than fedge's bugs (traceback)."""

from fedge.edge_runtime.common.errors import FedgeUserError


def is_user_error(exc: BaseException) -> bool:
    """Every error meant for the user derives from :class:`FedgeUserError`. Besides those, an operating-system
    error about a named file (a path the user gave that does not exist or cannot be read) is the user's to fix.
    Anything else (a bare ``ValueError``, ``KeyError``, ...) is a bug and keeps its traceback."""
    if isinstance(exc, FedgeUserError):
        return True
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) and exc.filename is not None
