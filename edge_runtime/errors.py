"""Domain errors of the edge runtime; the gRPC layer maps each to one status code, in one interceptor."""


class EdgeError(Exception):
    code_name = "INTERNAL"


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


class BundleError(EdgeError):
    """A release bundle that must not be installed (bad signature, hash mismatch, unsafe archive, bad manifest)."""
    code_name = "FAILED_PRECONDITION"


class NoSpace(OSError):
    """The disk holding the model repository cannot take a release: nothing was installed, and what is
    installed keeps serving."""


class AddressUnavailable(OSError):
    """The server cannot listen where it was told to (port taken, address not on this host)."""


class TLSConfigError(ValueError):
    """A certificate, key or CA file that TLS cannot use; the message names the file and what is wrong."""
