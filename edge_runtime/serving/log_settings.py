"""Triton's logging extension (LogSettings; tritonclient ``get_log_settings`` / ``update_log_settings``): turn the
server's INFO, WARNING and ERROR messages on or off, raise the verbose level (Python's DEBUG for the ``fedge``
loggers) or switch the timestamps to ISO 8601, on a running server. The log destination (``log_file``) is read
only: the server logs to stderr, wherever its supervisor sends that."""

from __future__ import annotations

import logging
import time

from fedge.edge_runtime.common.errors import InvalidInput

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = {"default": (FORMAT, None), "ISO8601": (FORMAT, "%Y-%m-%dT%H:%M:%SZ")}
SWITCHES = {"log_info": logging.INFO, "log_warning": logging.WARNING, "log_error": logging.ERROR}


class LogSettings(logging.Filter):
    """Owns the root handlers' format and filters what they write; ``settings()`` is what LogSettings returns."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = dict.fromkeys(SWITCHES, True)
        self.verbose_level, self.format = 0, "default"
        self.handlers: list[logging.Handler] = []  # the ones it formats and filters (none until installed)

    def install(self) -> LogSettings:
        """Take over the root logger's handlers (the server process's stderr)."""
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(self)
        self._apply()
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return self.verbose_level > 0
        if record.levelno <= logging.INFO:
            return self.enabled["log_info"]
        if record.levelno <= logging.WARNING:
            return self.enabled["log_warning"]
        return self.enabled["log_error"]

    def settings(self) -> dict[str, bool | int | str]:
        return {"log_file": "", **self.enabled, "log_verbose_level": self.verbose_level, "log_format": self.format}

    def update(self, changes: dict[str, bool | int | str], announce: bool = True) -> None:
        """All of ``changes`` or none: each is checked before any is applied. ``announce``: log the settings that
        result (a change on a running server; not the ones the server starts with)."""
        for key, value in changes.items():
            if key in SWITCHES:
                _expect(key, value, bool)
            elif key == "log_verbose_level":
                _expect(key, value, int)
            elif key == "log_format":
                if value not in FORMATS:
                    raise InvalidInput(f"log_format must be one of {sorted(FORMATS)}, got {value!r}")
            elif key == "log_file":
                raise InvalidInput("log_file cannot be changed on a running fedge edge server (it logs to stderr)")
            else:
                raise InvalidInput(f"unknown log setting {key!r}; fedge takes {sorted(self.settings())}")
        for key, value in changes.items():
            if key in SWITCHES:
                self.enabled[key] = bool(value)
            elif key == "log_verbose_level":
                self.verbose_level = int(value)
            else:
                self.format = str(value)
        self._apply()
        if announce:
            logging.getLogger("fedge.edge").warning("log settings now %s", self.settings())

    def _apply(self) -> None:
        if not self.handlers:
            return
        logging.getLogger("fedge").setLevel(logging.DEBUG if self.verbose_level else logging.INFO)
        fmt, datefmt = FORMATS[self.format]
        formatter = logging.Formatter(fmt, datefmt)
        if datefmt:
            formatter.converter = time.gmtime  # the Z in the format: UTC
        for handler in self.handlers:
            handler.setFormatter(formatter)


def _expect(key: str, value, kind: type) -> None:
    if type(value) is not kind:
        raise InvalidInput(f"{key} must be a {kind.__name__}, got {value!r}")
