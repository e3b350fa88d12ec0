"""Which exceptions are the user's to fix (printed as one line) rather than fedge's bugs (traceback)."""


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, ValueError, KeyError, PermissionError)):
        return True
    return type(exc).__name__ in {"DataError", "RunFailed", "FlowerError", "GateFailed", "BundleError", "LedgerCorrupt",
                                   "InsufficientClients", "AddressUnavailable", "NoSpace"}
