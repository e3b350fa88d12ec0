"""Domain errors of the edge runtime, and the one table that gives each its gRPC status code and HTTP status
(:func:`status_of`): both front ends answer with it, the data plane counts failures by it.

Also the root of every error meant for the user (:class:`FedgeUserError`), here at the bottom layer so that every
layer above can derive from it: the ``fedge`` command prints those as one line and lets everything else show its
traceback (a bug)."""


class FedgeUserError(Exception):
    """An error the user can fix (a flag, a file, a name, the state of a run): the CLI prints it as one line."""


class ConfigError(FedgeUserError, ValueError):
    """A flag or setting out of range, or settings that do not go together (also a ``ValueError``)."""


class MissingFileError(FedgeUserError, FileNotFoundError):
    """A file or directory the user named or must create first (the message says how)."""


class NotFoundError(FedgeUserError, KeyError):
    """A run, release or device the user named does not exist (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message is for people
        return str(self.args[0]) if self.args else ""


class EdgeError(Exception):
    code_name = "INTERNAL"  # the gRPC status code's name; its HTTP status is in HTTP_STATUS
    http_status = 0  # where an error's HTTP status is not its code's (0: HTTP_STATUS's)


class InvalidInput(EdgeError):
    code_name = "INVALID_ARGUMENT"


class ModelNotFound(EdgeError):
    code_name = "NOT_FOUND"


class ModelUnavailable(EdgeError):
    code_name = "UNAVAILABLE"


class Overloaded(EdgeError):
    """The model's queue is full, or a request waited past its queue timeout (Triton's queue policy)."""

    code_name = "UNAVAILABLE"


class TooLarge(EdgeError):
    code_name = "RESOURCE_EXHAUSTED"


class RegionNotFound(EdgeError):
    """A shared memory region that is not registered (status of one region)."""

    code_name = "NOT_FOUND"


class AlreadyExists(EdgeError):
    code_name = "ALREADY_EXISTS"


class PermissionDenied(EdgeError):
    code_name = "PERMISSION_DENIED"


class Unsupported(EdgeError):
    code_name = "UNIMPLEMENTED"


class FeedbackOff(EdgeError):
    """Feedback capture is off (the default): nothing is stored; the message says how to turn it on."""

    code_name = "FAILED_PRECONDITION"
    http_status = 404  # the REST endpoint is not there


class FeedbackNotFound(EdgeError):
    """A correction for a request id the feedback store does not hold: unknown, or expired (the message says
    which)."""

    code_name = "NOT_FOUND"


class BundleError(EdgeError, FedgeUserError):
    """A release bundle that must not be installed (bad signature, hash mismatch, unsafe archive, bad manifest)."""

    code_name = "FAILED_PRECONDITION"


class NoSpace(FedgeUserError, OSError):
    """The disk holding the model repository cannot take a release: nothing was installed, and what is
    installed keeps serving."""


class AddressUnavailable(FedgeUserError, OSError):
    """The server cannot listen where it was told to (port taken, address not on this host)."""


class TLSConfigError(ConfigError):
    """A certificate, key or CA file that TLS cannot use; the message names the file and what is wrong."""


MAX_MESSAGE_CHARS = (
    1024  # an error message's length at most: gRPC's metadata limit (16 KiB) always lets the status through
)
QUOTE_CHARS = 80  # a client-supplied name or value quoted in a message, at most


def quoted(value) -> str:
    """A client-supplied name or value as an error message quotes it: its repr, cut to a bounded length."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text)} characters)"


def message_of(exc: BaseException) -> str:
    """The message a client is answered with: the error's, cut to MAX_MESSAGE_CHARS."""
    text = str(exc)
    return text if len(text) <= MAX_MESSAGE_CHARS else f"{text[:MAX_MESSAGE_CHARS]}... (message cut)"


# Triton's mapping of gRPC status codes to HTTP statuses, plus 413 for a request over the size limit
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "ALREADY_EXISTS": 400,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}


def status_of(exc: BaseException) -> tuple[str, int]:
    """(gRPC status code name, HTTP status) of an exception raised while answering a request: a domain error's
    own; a client that went away is CANCELLED; NotImplementedError is UNIMPLEMENTED; anything else is a bug
    (INTERNAL)."""
    import asyncio

    if isinstance(exc, EdgeError):
        code = exc.code_name
        if exc.http_status:
            return code, exc.http_status
    elif isinstance(exc, asyncio.CancelledError):
        code = "CANCELLED"
    elif isinstance(exc, NotImplementedError):
        code = "UNIMPLEMENTED"
    else:
        code = "INTERNAL"
    return code, HTTP_STATUS.get(code, 500)
