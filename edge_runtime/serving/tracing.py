"""Triton's trace extension (``--trace-config`` at start; TraceSetting, tritonclient ``get_trace_settings`` /
``update_trace_settings``, at run time): every ``trace_rate``-th inference request of a model is traced, up to
``trace_count`` traces (-1: no limit), recording when it arrived, was queued, its batch started and finished
computing, and it was answered (ns on the monotonic clock, Triton's timestamp names), written as a JSON array
to the trace file in Triton's format, so Triton's trace_summary.py reads it. Settings are global, and a model
can override any of them; an update with an empty value clears that setting (a model's falls back to the global
one, a global one to the server's start value).

The trace file is chosen when the server starts, never over the network (Triton refuses it too since 24.05: a
client must not pick where the server writes). ``log_frequency`` 0 writes all traces at shutdown; N writes every
N traces to ``FILE.0``, ``FILE.1``, ... as they are collected (and the rest at shutdown to the next index)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedge.edge_runtime.common.errors import ConfigError, InvalidInput

log = logging.getLogger("fedge.edge")
LEVELS = ("OFF", "TIMESTAMPS")
KEYS = ("trace_file", "trace_level", "trace_rate", "trace_count", "log_frequency", "trace_mode")
_FIELDS = {"trace_level": "level", "trace_rate": "rate", "trace_count": "count", "log_frequency": "log_frequency"}
_CONFIG = {"level": "trace_level", "rate": "trace_rate", "count": "trace_count", "log-frequency": "log_frequency"}


@dataclass(frozen=True)
class TraceSettings:
    level: tuple[str, ...] = ("OFF",)
    rate: int = 1000  # trace one request in this many
    count: int = -1  # traces still to collect; -1: no limit
    log_frequency: int = 0  # write every N traces; 0: at shutdown

    @property
    def on(self) -> bool:
        return "TIMESTAMPS" in self.level and self.count != 0


def _setting(key: str, values: list[str]) -> object:
    """One setting's new value from its strings, checked; what a TraceSettings field holds."""
    if key == "trace_level":
        bad = [v for v in values if v not in LEVELS]
        if bad:
            extra = " (fedge records timestamps, not tensors)" if "TENSORS" in bad else ""
            raise InvalidInput(f"trace_level takes {list(LEVELS)}, got {bad}{extra}")
        on = tuple(v for v in values if v != "OFF")
        return on or ("OFF",)
    if len(values) != 1:
        raise InvalidInput(f"{key} takes one value, got {values}")
    try:
        number = int(values[0])
    except ValueError:
        raise InvalidInput(f"{key} must be an integer, got {values[0]!r}") from None
    low = {"trace_rate": 1, "trace_count": -1, "log_frequency": 0}[key]
    if number < low:
        raise InvalidInput(f"{key} must be >= {low}, got {number}")
    return number


def parse_config(entries: list[str]) -> tuple[Path | None, TraceSettings]:
    """Triton's ``--trace-config`` flags: ``rate=N``, ``level=OFF|TIMESTAMPS`` (repeatable), ``count=N``,
    ``mode=triton``, ``triton,file=PATH``, ``triton,log-frequency=N``."""
    file: Path | None = None
    changes: dict[str, Any] = {}
    levels: list[str] = []
    for entry in entries:
        mode, _, setting = entry.rpartition(",")
        name, eq, value = setting.partition("=")
        if mode not in ("", "triton") or not eq:
            raise ConfigError(
                f"--trace-config {entry!r}: expected [triton,]SETTING=VALUE (the opentelemetry mode is not supported)"
            )
        try:
            if name == "file":
                file = Path(value)
            elif name == "mode":
                if value != "triton":
                    raise InvalidInput(f"trace mode {value!r} is not supported (only triton)")
            elif name == "level":
                levels.append(value)
            elif name in _CONFIG:
                changes[_FIELDS[_CONFIG[name]]] = _setting(_CONFIG[name], [value])
            else:
                raise InvalidInput(
                    f"unknown setting {name!r}; fedge takes file, level, rate, count, log-frequency, mode"
                )
        except InvalidInput as exc:
            raise ConfigError(f"--trace-config {entry!r}: {exc}") from None
    if levels:
        try:
            changes["level"] = _setting("trace_level", levels)
        except InvalidInput as exc:
            raise ConfigError(f"--trace-config level: {exc}") from None
    settings = TraceSettings(**changes)
    if "TIMESTAMPS" in settings.level and file is None:
        raise ConfigError("--trace-config level=TIMESTAMPS needs a trace file: --trace-config triton,file=PATH")
    return file, settings


@dataclass
class Trace:
    """One traced request's timestamps: (name, ns) in the order they happened."""

    id: int
    model_name: str
    model_version: int
    request_id: str = ""
    timestamps: list[tuple[str, int]] = field(default_factory=list)

    def mark(self, name: str, t: float) -> None:
        """``t``: a time.perf_counter() reading (the monotonic clock on Linux)."""
        self.timestamps.append((name, int(t * 1e9)))

    def compute(self, start: float, input_end: float, output_start: float, end: float) -> None:
        """The backend call this request ran in (a batch's, shared by all of its requests)."""
        for name, t in (
            ("COMPUTE_START", start),
            ("COMPUTE_INPUT_END", input_end),
            ("COMPUTE_OUTPUT_START", output_start),
            ("COMPUTE_END", end),
        ):
            self.mark(name, t)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "request_id": self.request_id,
            "timestamps": [{"name": n, "ns": ns} for n, ns in self.timestamps],
        }


class Tracer:
    """Sampling, settings and the trace file. ``active`` is a plain attribute, so an untraced server pays one
    attribute read per request."""

    def __init__(self, file: Path | None = None, settings: TraceSettings = TraceSettings()) -> None:
        self.file = Path(file) if file else None
        self._start = settings  # what an emptied global setting returns to
        self._global = settings
        self._models: dict[str, dict[str, Any]] = {}  # model -> its own settings (TraceSettings field -> value)
        self._seen: dict[str, int] = {}  # requests per model (or "" for the global scope) counted
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._done: list[Trace] = []
        self._file_index = 0
        self._writers: list[threading.Thread] = []
        self.active = self._ever_on = settings.on

    def effective(self, model: str = "") -> TraceSettings:
        return replace(self._global, **self._models.get(model, {})) if model else self._global

    def settings(self, model: str = "") -> dict[str, list[str]]:
        s = self.effective(model)
        return {
            "trace_file": [str(self.file)] if self.file else [],
            "trace_level": list(s.level),
            "trace_rate": [str(s.rate)],
            "trace_count": [str(s.count)],
            "log_frequency": [str(s.log_frequency)],
            "trace_mode": ["triton"],
        }

    def update(self, changes: dict[str, list[str]], model: str = "") -> None:
        """All of ``changes`` or none; an empty list clears that setting."""
        parsed: dict[str, Any] = {}
        for key, values in changes.items():
            if key == "trace_file":
                raise InvalidInput(
                    "trace_file cannot be changed over the network (the server would write where a"
                    " client says); start the server with --trace-config triton,file=PATH"
                )
            if key == "trace_mode":
                if values not in ([], ["triton"]):
                    raise InvalidInput(f"trace_mode {values} is not supported (only triton)")
                continue
            if key not in _FIELDS:
                raise InvalidInput(f"unknown trace setting {key!r}; fedge takes {list(KEYS)}")
            parsed[_FIELDS[key]] = _setting(key, values) if values else None
        with self._lock:
            own = dict(self._models.get(model, {}))
            glob = self._global
            for name, value in parsed.items():
                if model and value is None:
                    own.pop(name, None)
                elif model:
                    own[name] = value
                else:
                    glob = replace(glob, **{name: getattr(self._start, name) if value is None else value})
            if "TIMESTAMPS" in replace(glob, **own).level and self.file is None:
                raise InvalidInput(
                    "tracing needs a trace file, and this server was started without one: start it"
                    " with --trace-config triton,file=PATH"
                )
            if own:
                self._models[model] = own
            else:  # nothing of its own left: the model follows the global settings and counter again
                self._models.pop(model, None)
            self._global = glob
            self._refresh()
        log.warning("trace settings%s now %s", f" of model {model}" if model else "", self.settings(model))

    def sample(self, model: str, version: int, request_id: str) -> Trace | None:
        """A Trace if this request is one to trace, else None (also counts the request toward the rate). A model
        with settings of its own has its own request counter, and its own trace budget if it set trace_count."""
        with self._lock:
            own = self._models.get(model)  # never empty: update() drops a model with nothing of its own
            scope = model if own else ""
            s = replace(self._global, **own) if own else self._global
            if not s.on:
                return None
            seen = self._seen[scope] = self._seen.get(scope, 0) + 1
            if seen % s.rate:
                return None
            if s.count > 0:
                if own and "count" in own:
                    own["count"] = s.count - 1
                else:
                    self._global = replace(self._global, count=s.count - 1)
                self._refresh()
        return Trace(next(self._ids), model, version, request_id)

    def _refresh(self) -> None:
        self.active = self._global.on or any(replace(self._global, **own).on for own in self._models.values())
        self._ever_on = self._ever_on or self.active

    def finish(self, trace: Trace) -> None:
        with self._lock:
            self._done.append(trace)
            every = self.effective(trace.model_name).log_frequency
            if not (every and len(self._done) >= every):
                return
            traces, self._done = self._done, []
            path = Path(f"{self.file}.{self._file_index}")
            self._file_index += 1
        # off the event loop: serializing thousands of traces would hold up every request meanwhile
        writer = threading.Thread(target=_write, args=(path, traces), name="fedge-trace-writer", daemon=True)
        writer.start()
        self._writers.append(writer)

    def close(self) -> None:
        """At shutdown, what has not been written yet: to FILE (log_frequency 0: every trace, or [] if tracing
        was on and caught none), or to the next FILE.N after periodic writes."""
        for writer in self._writers:
            writer.join(30)
        with self._lock:
            if self.file is None or not (self._done or (self._ever_on and self._file_index == 0)):
                return
            periodic = self._file_index or self._global.log_frequency
            _write(Path(f"{self.file}.{self._file_index}") if periodic else self.file, self._done)
            self._done = []


def _write(path: Path, traces: list[Trace]) -> None:
    """A JSON array, one trace per line, replacing ``path`` at once (a reader never sees half a file)."""
    text = "[\n" + ",\n".join(json.dumps(t.to_json()) for t in traces) + "\n]\n"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk must not fail requests
        log.error("cannot write %d traces to %s: %s", len(traces), path, exc)
        return
    log.info("wrote %d traces to %s", len(traces), path)
