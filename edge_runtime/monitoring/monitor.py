"""The device's monitor: an observer of every answered request (fedge.edge_runtime.serving.observers) that keeps each
served version's health (:class:`~.window.VersionHealth`), takes clients' corrections into the feedback store, and
gives the health signals to the REST/gRPC health endpoints, to Prometheus and, as counts-only summaries, to the
release puller's polls.

It runs on the observers' thread, off the request path (an answer costs the data plane one deque append), on the
answers of an interval at once: one softmax over all their rows, one write of the feedback store.

    >>> monitor = Monitor(MonitorConfig(window=1000), repo)
    >>> plane.observers.add(monitor.observe)   # called with each interval's answers
    >>> monitor.health("intent")["versions"][0]["estimated_accuracy"]
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge_runtime.common.errors import ConfigError, FeedbackOff, InvalidInput, quoted
from fedge.edge_runtime.distribution.bundle import sha256_file
from fedge.edge_runtime.monitoring.feedback import FeedbackStore
from fedge.edge_runtime.monitoring.summary import HealthSummary, signals
from fedge.edge_runtime.monitoring.window import VersionHealth
from fedge.edge_runtime.serving.model import LoadedModel
from fedge.edge_runtime.serving.observers import Answered
from fedge.edge_runtime.serving.tokenizer import HFTokenizer

FEEDBACK_OFF = (
    "feedback capture is off on this device: start it with fedge edge serve --feedback-store DIR"
    " (--keep-inputs 7d keeps each request's input that long, so that a correction can name its id)"
)


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = True  # --no-monitoring: no health signals, no feedback (nothing observes the answers)
    window: int = 1000  # predictions the health signals describe (the latest)
    min_predictions: int = 50  # --health-min-requests: a version with fewer new ones is not reported
    feedback_store: Path | None = None  # --feedback-store: corrections (and kept inputs) here; None: capture off
    keep_inputs_s: float = 7 * 86400.0  # --keep-inputs
    max_kept_inputs: int = 200_000
    max_corrections: int = 100_000
    max_store_bytes: int = 256 << 20  # of kept inputs
    new_labels: tuple[str, ...] = ()  # --feedback-labels: labels corrections may carry beyond the catalogue

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_predictions < 1:
            raise ConfigError("the health window and --health-min-requests must be >= 1")
        if self.min_predictions > self.window:
            raise ConfigError(
                f"--health-min-requests {self.min_predictions} exceeds the health window of {self.window}"
            )


class Monitor:
    def __init__(self, cfg: MonitorConfig, repo: Any) -> None:
        self.cfg, self.repo = cfg, repo  # repo: the serving ModelRepository (get(name, version) -> LoadedModel)
        self._versions: dict[tuple[str, int], VersionHealth] = {}
        self._shas: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self.store = (
            FeedbackStore(
                cfg.feedback_store, cfg.keep_inputs_s, cfg.max_kept_inputs, cfg.max_corrections, cfg.max_store_bytes
            )
            if cfg.feedback_store is not None
            else None
        )

    @property
    def capturing(self) -> bool:
        return self.store is not None

    def new_request_id(self) -> str:
        return uuid.uuid4().hex

    # -- the observer ------------------------------------------------------------------------------------------
    def observe(self, batch: Sequence[Answered]) -> None:
        """The answers of one interval (the observers' thread): binned per version, all rows at once."""
        groups: dict[tuple[str, int], list[Answered]] = {}
        for a in batch:
            groups.setdefault((a.model, a.version), []).append(a)
        for (name, version), answers in groups.items():
            m = self._model(name, version)
            if m is not None:
                self._observe(m, answers)

    def _observe(self, m: LoadedModel, answers: list[Answered]) -> None:
        out = m.manifest.outputs[0].name
        fresh, cached_rows = [], 0
        for a in answers:
            if not a.cached and out in a.outputs:
                fresh.append(a)
            else:  # from the response cache: counted, not binned
                cached_rows += len(next(iter(a.inputs.values()), ()))
        logits = np.concatenate([a.outputs[out].reshape(len(a.outputs[out]), -1) for a in fresh]) if fresh else None
        tokens = _token_stats(m, [a.features for a in fresh]) if fresh else None
        self._health(m).observe(logits, np.array([a.total_s for a in answers]), rows=cached_rows, tokens=tokens)
        if self.store is not None:
            self._keep(m, [a for a in fresh if a.request_id and len(a.outputs[out]) == 1], out)

    def failed(self, model: str, version: int) -> None:
        """A request the device failed (its side: not a client's mistake)."""
        m = self._model(model, version)
        if m is not None:
            self._health(m).failed()

    def _keep(self, m: LoadedModel, answers: list[Answered], out: str) -> None:
        """The inputs of single-row answers with an id, kept for the corrections that will name them."""
        assert self.store is not None
        rows: list[tuple[str, int, str, str, str | None, np.ndarray | None]] = []
        for a in answers:
            if len(a.inputs) != 1:
                continue
            (value,) = a.inputs.values()
            predicted = int(np.argmax(a.outputs[out][0]))
            served = m.manifest.labels[predicted] if predicted < len(m.manifest.labels) else str(predicted)
            if value.dtype == object:
                raw = value.reshape(-1)[0]
                text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
                rows.append((m.name, m.version, a.request_id, served, text, None))
            else:
                rows.append((m.name, m.version, a.request_id, served, None, value[0]))
        if rows:
            self.store.keep_many(rows)

    def _model(self, name: str, version: int) -> LoadedModel | None:
        try:
            m = self.repo.get(name, str(version))
        except Exception:  # unloaded since it answered
            return None
        return m if m.manifest.labels and m.manifest.outputs else None

    def _health(self, m: LoadedModel) -> VersionHealth:
        key = (m.name, m.version)
        health = self._versions.get(key)
        if health is None:
            with self._lock:
                health = self._versions.get(key)
                if health is None:
                    ref = m.manifest.monitoring
                    health = self._versions[key] = VersionHealth(
                        m.name, m.version, len(m.manifest.labels), float(ref.get("temperature", 1.0)), self.cfg.window
                    )
        return health

    # -- corrections -------------------------------------------------------------------------------------------
    def feedback(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """A correction: ``{"id": request id, "label": right label}`` or, for a text model, ``{"text", "label"}``."""
        if self.store is None:
            raise FeedbackOff(FEEDBACK_OFF)
        m = self.repo.get(model)  # ModelNotFound / InvalidInput for a bad name
        label, request_id, text = body.get("label"), body.get("id", ""), body.get("text", "")
        if not isinstance(label, str) or not isinstance(request_id, str) or not isinstance(text, str):
            raise InvalidInput("feedback is a JSON object with label, and id or text, all strings")
        if bool(request_id) == bool(text):
            raise InvalidInput("feedback names the answer by exactly one of id (the inference request's) or text")
        if text and m.tokenizer is None:
            raise InvalidInput(f"model {quoted(model)} takes tensors, not text: name the answer by its request id")
        unknown = sorted(set(body) - {"id", "text", "label"})
        if unknown:
            raise InvalidInput(f"feedback takes id, text and label, not {unknown}")
        if label not in m.manifest.labels and label not in self.cfg.new_labels:
            also = f", nor among --feedback-labels {list(self.cfg.new_labels)}" if self.cfg.new_labels else ""
            raise InvalidInput(
                f"label {quoted(label)} is not in the catalogue of {model!r}: {list(m.manifest.labels)}{also}"
            )
        got = self.store.correct(m.name, label, request_id=request_id, text=text)
        version = got.version or m.version
        served_by = self._model(m.name, version)
        if served_by is not None:
            self._health(served_by).feedback(got.matched, got.correct)
        return {"matched": got.matched, "was_correct": got.correct, "served_label": got.served, "version": version}

    # -- what is reported --------------------------------------------------------------------------------------
    def health(self, model: str = "") -> dict[str, Any]:
        """The health signals of each version observed (of ``model``; "": every model) as JSON."""
        if model:
            self.repo.get(model)  # ModelNotFound for a model not installed
        out = []
        for (name, version), h in sorted(self._versions.items()):
            if model and name != model:
                continue
            m = self._model(name, version)
            reference = m.manifest.monitoring if m is not None else {}
            out.append(
                {
                    "model": name,
                    "version": version,
                    "temperature": h.temperature,
                    "reference": bool(reference),
                    **signals(h.summary(), reference or None),
                    **({} if reference else {"drift_note": "this release carries no reference: drift is not computed"}),
                }
            )
        doc: dict[str, Any] = {"versions": out}
        if self.store is not None:
            doc["feedback_store"] = self.store.counts()
        return doc

    def due(self) -> list[HealthSummary]:
        """Summaries of the versions with at least ``min_predictions`` new predictions since the last one sent."""
        out = []
        for (name, version), h in list(self._versions.items()):
            if h.due(self.cfg.min_predictions):
                out.append(h.summary(self._sha(name, version)))
        return out

    def sent(self, summaries: list[HealthSummary]) -> None:
        for s in summaries:
            h = self._versions.get((s.model, int(s.local_version)))
            if h is not None:
                h.sent(s)

    def _sha(self, name: str, version: int) -> str:
        key = (name, version)
        if key not in self._shas:
            path = Path(self.repo.root) / name / str(version) / "manifest.json"
            self._shas[key] = sha256_file(path) if path.exists() else ""
        return self._shas[key]

    def labels(self, name: str, version: int) -> tuple[str, ...]:
        m = self._model(name, version)
        return m.manifest.labels if m is not None else ()

    def versions(self) -> list[VersionHealth]:
        return list(self._versions.values())

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _token_stats(m: LoadedModel, features: list[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, ...] | None:
    """(lengths, unknown tokens, truncated) per row of a text model's token ids, over several answers; None for
    other models."""
    tok = m.tokenizer
    if tok is None or not all(features):
        return None
    pad = tok.pad_id if isinstance(tok, HFTokenizer) else 0
    unk = getattr(tok, "unk_id", None)
    lengths, unknown = [], []
    for f in features:
        ids = next(iter(f.values()))
        lengths.append((ids != pad).sum(axis=1))
        unknown.append((ids == unk).sum(axis=1) if unk is not None else np.zeros(len(ids), dtype=np.int64))
    n = np.concatenate(lengths)
    return n, np.concatenate(unknown), n >= tok.max_len
