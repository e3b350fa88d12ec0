"""Inference statistics of one loaded model version, as Triton reports them (ModelStatistics): cumulative counts and
durations of successful and failed requests and of their phases (queue, compute input, infer, output), and per
batch size how many backend calls ran and how long they took. Updated from the gRPC loop (request phases) and the
batcher threads (executions), hence the lock; read by ModelStatistics."""

from __future__ import annotations

import threading
import time

from fedge.proto import grpc_service_pb2 as pb

PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


class ModelStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durations = {p: [0, 0] for p in PHASES}  # phase -> [count, ns]
        self._batches: dict[int, list[int]] = {}  # batch size -> [executions, ns]
        self._inferences = self._executions = 0
        self._last_ms = 0

    def request(self, ok: bool, total_s: float, input_s: float = 0.0, output_s: float = 0.0) -> None:
        """A request answered (``ok``) or failed after its model was found."""
        with self._lock:
            self._add("success" if ok else "fail", total_s, 1)
            if ok:
                self._add("compute_input", input_s, 1)
                self._add("compute_output", output_s, 1)

    def cache_hit(self, total_s: float, lookup_s: float) -> None:
        """A request answered from the response cache: a success that never queued or computed (as Triton counts)."""
        with self._lock:
            self._add("success", total_s, 1)
            self._add("cache_hit", lookup_s, 1)

    def cache_miss(self, seconds: float) -> None:
        """A lookup that found nothing; ``seconds``: looking up and storing the answer."""
        with self._lock:
            self._add("cache_miss", seconds, 1)

    def execution(self, rows: int, queued_s: list[float], compute_s: float) -> None:
        """One backend call for ``len(queued_s)`` requests holding ``rows`` rows; each request is charged the whole
        call, as Triton does."""
        with self._lock:
            self._inferences += rows
            self._executions += 1
            self._last_ms = int(time.time() * 1000)
            for q in queued_s:
                self._add("queue", q, 1)
            self._add("compute_infer", compute_s * len(queued_s), len(queued_s))
            b = self._batches.setdefault(rows, [0, 0])
            b[0] += 1
            b[1] += int(compute_s * 1e9)

    def _add(self, phase: str, seconds: float, count: int) -> None:
        d = self._durations[phase]
        d[0] += count
        d[1] += int(seconds * 1e9)

    def to_proto(self, name: str, version: str) -> pb.ModelStatistics:
        with self._lock:
            stats = pb.ModelStatistics(
                name=name,
                version=version,
                last_inference=self._last_ms,
                inference_count=self._inferences,
                execution_count=self._executions,
            )
            for phase, (count, ns) in self._durations.items():
                getattr(stats.inference_stats, phase).CopyFrom(pb.StatisticDuration(count=count, ns=ns))
            for size, (count, ns) in sorted(self._batches.items()):
                stats.batch_stats.add(batch_size=size, compute_infer=pb.StatisticDuration(count=count, ns=ns))
        return stats
