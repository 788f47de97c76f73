"""Tiny timing helpers shared by the benchmarks (best-of-N wall time per operation)."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_op(fn: Callable[[], object], *, n: int, repeat: int = 5) -> float:
    """Best-of-`repeat` mean seconds per call of `fn` over `n` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def report(name: str, value: float, baseline: float, unit: str = "us") -> None:
    """Print one figure and its ratio to the bare baseline."""
    scale = 1e6 if unit == "us" else 1.0
    print(  # noqa: T201 - a benchmark's output is its report
        f"{name:<52} {value * scale:10.1f} {unit}   baseline {baseline * scale:8.1f} {unit}"
        f"   ratio {value / baseline:5.2f}x"
    )
