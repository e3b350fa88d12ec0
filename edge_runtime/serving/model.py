"""A loaded model version: manifest + backend + batcher, with the on-device preprocessing the manifest asks
for (text models take a BYTES tensor and tokenize it here with the manifest's tokenizer parameters)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedge.edge_runtime.common.errors import InvalidInput
from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc
from fedge.edge_runtime.serving.backends import Backend, default_instances, load_backend
from fedge.edge_runtime.serving.batcher import BatchingConfig, DynamicBatcher
from fedge.edge_runtime.serving.statistics import ModelStats
from fedge.edge_runtime.serving.tokenizer import HashingTokenizer, HFTokenizer, load_tokenizer

LABEL_OUTPUT = "label"


@dataclass
class LoadedModel:
    name: str
    version: int
    manifest: Manifest
    backend: Backend
    batching: BatchingConfig
    batcher: DynamicBatcher | None = None
    tokenizer: HashingTokenizer | HFTokenizer | None = None
    stats: ModelStats = field(default_factory=ModelStats)
    on_batch: Callable[[int, list[float], float], None] | None = None  # (rows, queue times, backend s): metrics

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        bundle_dir: Path,
        manifest: Manifest,
        backend: str,
        batching: BatchingConfig,
        threads: int = 1,
        on_batch=None,
        engine_cache: Path | None = None,
        wrap_backend: Callable[[Backend], Backend] | None = None,
    ) -> LoadedModel:
        be = load_backend(bundle_dir, manifest, backend, threads, engine_cache)
        if wrap_backend is not None:
            be = wrap_backend(be)
        tok = manifest.preprocessing.get("tokenizer")
        batching = dataclasses.replace(
            batching,
            max_batch_size=min(batching.max_batch_size, manifest.max_batch_size),
            instances=batching.instances or default_instances(be.name),
        )
        model = cls(name, version, manifest, be, batching, tokenizer=load_tokenizer(tok, bundle_dir) if tok else None)
        if batching.enabled:
            model.batcher = DynamicBatcher(be.run, batching, model._executed, pad_value=model.pad_value)
        model.warmup()
        model.stats, model.on_batch = ModelStats(), on_batch  # count from the first client request on
        return model

    @property
    def pad_value(self) -> int | None:
        """What pads a variable-length input when requests of different lengths share a batch (None: no padding)."""
        return getattr(self.tokenizer, "pad_id", None) if isinstance(self.tokenizer, HFTokenizer) else None

    # -- the contract clients see ------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorDesc, ...]:
        raw = self.manifest.preprocessing.get("raw_input")
        if raw and self.tokenizer is not None:
            return (TensorDesc(raw["name"], "BYTES", (-1, 1)),)
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorDesc, ...]:
        outs = self.manifest.outputs
        if self.manifest.labels:
            outs = outs + (TensorDesc(LABEL_OUTPUT, "BYTES", (-1, 1)),)
        return outs

    @property
    def max_batch_size(self) -> int:
        return self.batching.max_batch_size

    # -- running -------------------------------------------------------------------------------------------
    def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.tokenizer is None:
            return inputs
        (desc,) = self.inputs
        texts = inputs[desc.name].reshape(-1)
        try:
            decoded = [t.decode("utf-8") if isinstance(t, (bytes, bytearray)) else str(t) for t in texts]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input {desc.name!r}: text is not UTF-8 ({exc.reason})") from None
        return {self.manifest.inputs[0].name: self.tokenizer.encode_batch(decoded)}

    def infer(self, inputs: dict[str, np.ndarray], timeout: float = 60.0) -> dict[str, np.ndarray]:
        feeds = self.preprocess(inputs)
        if self.batcher is not None:
            return self.postprocess(self.batcher.submit(feeds).result(timeout=timeout))
        return self.postprocess(self._run_timed(feeds, time.perf_counter()))

    async def run_async(
        self,
        feeds: dict[str, np.ndarray],
        executor: Executor | None = None,
        trace=None,
        timeout_us: int = 0,
        priority: int = 0,
    ) -> dict[str, np.ndarray]:
        """The backend outputs for preprocessed ``feeds``, on the server's event loop: a batched request waits for
        its batch there; an unbatched one runs on a thread of ``executor``. (Running a lone request on the loop
        itself was tried: while the loop runs the model it receives nothing, so every request looked lone and
        batching stopped; see docs/BENCHMARKS.md.) ``trace``: a tracing.Trace told when the backend ran;
        ``timeout_us``: the request's own queue timeout (batched models, when their queue policy allows it);
        ``priority``: the request's own (batched models with priority levels; 1 the highest)."""
        if self.batcher is not None:
            return await self.batcher.submit_async(feeds, trace, timeout_us, priority)
        return await asyncio.get_running_loop().run_in_executor(
            executor, self._run_timed, feeds, time.perf_counter(), trace
        )

    def _run_timed(self, feeds: dict[str, np.ndarray], submitted: float, trace=None) -> dict[str, np.ndarray]:
        """One unbatched backend call, accounted like a batch of one."""
        started = time.perf_counter()
        try:
            return self.backend.run(feeds)
        finally:
            ended = time.perf_counter()
            if trace is not None:
                trace.compute(started, started, ended, ended)
            self._executed(len(next(iter(feeds.values()))), [started - submitted], ended - started)

    def _executed(self, rows: int, queued: list[float], compute_s: float) -> None:
        self.stats.execution(rows, queued, compute_s)
        if self.on_batch is not None:
            self.on_batch(rows, queued, compute_s)

    def postprocess(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adds the label strings to a classifier's outputs."""
        if not self.manifest.labels:
            return out
        logits = out[self.manifest.outputs[0].name]
        labels = np.array([self.manifest.labels[i].encode() for i in logits.argmax(axis=1)], dtype=object)
        return {**out, LABEL_OUTPUT: labels.reshape(-1, 1)}

    def warmup(self) -> None:
        """One request through the whole path before the model becomes visible."""
        sample = {}
        for d in self.inputs:
            shape = tuple(1 if s < 0 else s for s in d.shape)
            sample[d.name] = (
                np.full(shape, b"warm up", dtype=object)
                if d.datatype == "BYTES"
                else np.zeros(shape, dtype=_np(d.datatype))
            )
        self.infer(sample)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def _np(datatype: str):
    from fedge.edge_runtime.common.datatypes import NUMPY

    return NUMPY[datatype]
