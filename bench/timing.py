"""Side-by-side timing: variants interleaved in a fresh random order every repetition, each call block sized
to a target duration, one untimed call before each block (fast calls only), medians over many repetitions."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def stats(samples: list[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples), "n": len(samples)}


def interleaved(
    variants: dict[str, Callable[[], object]],
    reps: int,
    target_s: float = 0.25,
    seed: int = 0,
    on_rep: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every variant, one sample per repetition."""
    calls = {}
    for name, fn in variants.items():
        fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, round(target_s / max(time.perf_counter() - t0, 1e-7)))
    rng = random.Random(seed)
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            fn, k = variants[name], calls[name]
            if k > 1:
                fn()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            out[name].append((time.perf_counter() - t0) / k)
        if on_rep:
            on_rep()
    return out


def paired_ratio(num: list[float], den: list[float]) -> dict:
    """num/den per repetition (variants ran back to back, so machine noise cancels), summarized."""
    return stats([a / b for a, b in zip(num, den)])
