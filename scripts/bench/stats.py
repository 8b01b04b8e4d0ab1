"""Timings and percentiles as the benchmarks take and report them."""

import statistics
import time
from collections.abc import Callable


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    """Seconds taken by each of repeat calls."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99) of values, inclusive of the extremes."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]
