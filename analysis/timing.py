"""The one timing protocol for "how much faster is it?" (masked vs physically pruned): the Prune
page, ``prunelens prune --physical`` and ``prunelens bench`` all time through :func:`compare`.

Protocol: one warm-up run of each side (untimed: batches, plans and caches are built), then
:data:`REPEATS` timed runs of each, interleaved A, B, A, B, … so that a machine that gets busier
slows both sides alike; each side's time is the **median** of its runs, the ratio is the median
of the per-pair ratios, and the spread (the lowest and highest per-pair ratio) is reported beside
it, so a reader sees how far one reading can be trusted. Wall-clock seconds
(``time.perf_counter``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPEATS = 3  # timed runs of each side after the warm-up
WARMUP = 1  # untimed runs of each side first


@dataclass
class Comparison:
    """Medians of the timed runs of two sides and their ratio (``a`` over ``b``: > 1 means
    ``b`` is faster), with every run kept."""

    a_runs: list[float] = field(default_factory=list)
    b_runs: list[float] = field(default_factory=list)
    warmup: int = WARMUP

    @property
    def a_seconds(self) -> float:
        return statistics.median(self.a_runs)

    @property
    def b_seconds(self) -> float:
        return statistics.median(self.b_runs)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.a_runs, self.b_runs) if b > 0]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.ratios), max(self.ratios)) if self.ratios else None

    def describe(self) -> str:
        """One line: the ratio, its spread and how it was measured."""
        low, high = self.spread or (float("nan"), float("nan"))
        return (f"{self.ratio:.2f}x (runs ranged {low:.2f}x–{high:.2f}x; median of {len(self.a_runs)} "
                f"interleaved runs after {self.warmup} warm-up)")


def compare(a: Callable[[], object], b: Callable[[], object], repeats: int = REPEATS,
            warmup: int = WARMUP, progress: Callable[[float, str], None] | None = None) -> Comparison:
    """Time ``a`` and ``b`` by the protocol above; ``progress(fraction, message)`` after each run."""
    total = 2 * (warmup + repeats)
    done = 0
    out = Comparison(warmup=warmup)

    def step(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / total, message)

    for _ in range(warmup):
        a()
        step("warm-up")
        b()
        step("warm-up")
    for i in range(repeats):
        for fn, runs in ((a, out.a_runs), (b, out.b_runs)):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
            step(f"timed run {i + 1} of {repeats}")
    return out
