"""Matmul precision of masked evaluation: exact fp32, or bf16 whose predictions (or nearest
neighbours) are fp32's.

Owns the choice (``auto`` / ``fp32`` / ``bf16``, :func:`resolve`, ``PRUNELENS_PRECISION``) and
the rule that keeps the bf16 path's *predictions* equal to fp32's:

1. **calibration** (once per evaluator): the unpruned model is run in bf16 over the whole data set
   and compared with the exact fp32 outputs; ``error`` is the largest change of any logit
   difference ``l_j - l_k`` of any example, ``scale`` the median largest |logit|;
2. **the mask's own error** (every mask): a guard sample is taken in fp32 and its largest error
   is measured — ``KNOWN_GUARD`` of the estimate subset's examples when the first estimate of
   this mask was computed (exact fp32 already, so free; the subset's other examples are not run
   in bf16 at all, their exact logits are used as they are), else ``GUARD_SIZE`` fixed random
   ones;
3. **close calls**: an example whose bf16 margin (top-1 minus top-2 logit) is below
   ``RECHECK_SAFETY × max(own error, error × clip(scale_mask / scale, SCALE_FLOOR, 1))`` is
   recomputed in fp32; the recomputed examples join the own-error measurement, and the rule is
   applied again until nothing is left below it (a pruned model can round worse than the
   unpruned one; logits shrink with heavy pruning, and so do their rounding errors).

Everywhere else the bf16 margin is several times the largest error seen, so the predicted class
is fp32's. Losses and margins of confident examples keep a bf16 rounding error (measured in
docs/PERFORMANCE.md: at most a few 1e-4 on the mean loss of the default).

Sentence vectors (the embedding objective) have no class; the decision they make is each
sentence's **nearest neighbour** in the data set (``neighbour_agreement`` and the per-example
``correct``). The same three steps with distances of unit vectors instead of logit differences
(``Calibration.kind == "vectors"``): ``error`` is the largest distance between a sentence's unit
vector in bf16 and in fp32; every cosine between two sentences then moves by at most
``δ_i + δ_j + δ_i δ_j``, with ``δ = RECHECK_SAFETY × max(error, the mask's own error)`` for a bf16
row and 0 for an exact one; a sentence whose best similarity could be overtaken by another
within those bounds is recomputed in fp32 *with every such candidate*
(:func:`uncertain_neighbours`), until no row is uncertain, so every nearest neighbour is fp32's.
bf16 is refused for sentence vectors when the unpruned model's own check would recompute more than
``MAX_RECHECK_SHARE`` of the sentences: then it cannot pay. On ``default-embedding`` it is refused
(measured: bf16 moves a unit vector by up to 0.0077, median 0.0044, and changes 0.46 % of the
unpruned nearest neighbours, while nearly every sentence's best and second-best neighbours are
closer than the bound: the check flags all 872 sentences, and a forced run recomputed 869 of 872
at 30 % and 50 % head sparsity), so that model runs exact fp32.
The cosines to the unpruned vectors (the reported score, its loss and margin) keep a bf16
rounding error, as losses do for classifiers (measured in docs/PERFORMANCE.md). Data that pairs
its sentences (STS scores, query/positive retrieval) stays exact fp32: its rank metrics are not
checked.

``auto`` uses bf16 only where the CPU multiplies bf16 natively (``avx512_bf16`` / ``amx_bf16``,
about 2.3x the fp32 matmul throughput, and oneDNN is not capped below them by
``ONEDNN_MAX_CPU_ISA``); elsewhere it would be slower, so ``auto`` means fp32. On such CPUs both
low-precision candidates were measured and neither pays (docs/PERFORMANCE.md, "CPUs without
native bf16"; ``benchmarks/precision.py --candidates`` re-measures them): oneDNN's emulated bf16
is several times *slower* than fp32, and dynamic int8 (per-channel weights, per-row activations,
``prunelens.analysis.fastpath.INT8``) is too inexact for this rule — its calibration error is ~8x bf16's,
so a quarter to two thirds of the examples would be recomputed in fp32. :func:`masked_path`
names the path ``auto`` takes and why. The unpruned model is always evaluated in fp32: every
delta is measured against exact numbers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunelens.analysis.objectives import nearest_neighbours, unit_rows

PRECISIONS = ("auto", "fp32", "bf16")
ENV = "PRUNELENS_PRECISION"
RECHECK_SAFETY = 3.0  # close-call threshold = this x the largest calibration error (x scale ratio)
SCALE_FLOOR = 0.05  # the threshold shrinks with the logit scale, never below this share
MAX_RELATIVE_ERROR = 0.25  # bf16 is refused when its calibration error exceeds this x scale
GUARD_SIZE = 16  # examples recomputed in fp32 for every mask, to measure that mask's own error
KNOWN_GUARD = 32  # of an estimate's exact examples, those run in bf16 too (the mask's own error)
MAX_VECTOR_ERROR = 0.1  # bf16 is refused when it moves an unpruned unit sentence vector further
MAX_RECHECK_SHARE = 0.25  # ... or when more of the sentences than this would be recomputed in fp32
NEIGHBOUR_CELLS = 1 << 22  # similarities computed at once by the neighbour check (32 MiB of float64)


def resolve(precision: str | None = None) -> str:
    """The precision to use: the argument, else ``$PRUNELENS_PRECISION``, else ``auto``."""
    value = (precision or os.environ.get(ENV) or "auto").strip().lower()
    if value not in PRECISIONS:
        raise ValueError(f"unknown precision {value!r}: choose one of {', '.join(PRECISIONS)}")
    return value


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 dot products
ISA_ENV = "ONEDNN_MAX_CPU_ISA"  # oneDNN's own cap on the instructions it may use
# oneDNN ISA caps that keep bf16 instructions (AVX512_CORE_BF16, AVX512_CORE_AMX, AVX10_1_512...)
_BF16_ISA_TAGS = ("BF16", "AMX", "AVX10", "FP16")
# measured on the 2-core machine with bf16 hidden (docs/PERFORMANCE.md, "CPUs without native bf16")
NO_BF16_FINDINGS = ("oneDNN's emulated bf16 measured ~5x slower than fp32 per matmul; dynamic "
                    "int8 (W8A8) changes the unpruned logits ~8x more than bf16, so 26-69% of "
                    "the examples would be recomputed in fp32")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def isa_cap() -> str | None:
    """``$ONEDNN_MAX_CPU_ISA`` upper-cased, None when unset or uncapped (``ALL``/``DEFAULT``)."""
    cap = os.environ.get(ISA_ENV, "").strip().upper()
    return None if cap in ("", "ALL", "DEFAULT") else cap


def no_native_bf16_reason(device: str = "cpu") -> str | None:
    """Why bf16 products are not native on ``device`` (None when they are): on the CPU, the flags
    are absent from /proc/cpuinfo or oneDNN is capped below them; on CUDA, the GPU has no bf16
    (before Ampere)."""
    if str(device).startswith("cuda"):
        import torch

        return None if torch.cuda.is_bf16_supported() else "no native bf16 on this GPU (before Ampere)"
    if not set(BF16_FLAGS) & cpu_flags():
        return f"no native bf16 ({'/'.join(BF16_FLAGS)} absent from /proc/cpuinfo)"
    cap = isa_cap()
    if cap is not None and not any(tag in cap for tag in _BF16_ISA_TAGS):
        return f"no native bf16 ({ISA_ENV}={cap} keeps oneDNN from bf16 instructions)"
    return None


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions that oneDNN may use (/proc/cpuinfo,
    ``$ONEDNN_MAX_CPU_ISA``)."""
    return no_native_bf16_reason() is None


def masked_path(precision: str, native: bool | None = None, device: str = "cpu") -> tuple[str, str]:
    """(path, why) that pruned masks take before calibration: ``checked-bf16`` or ``fp32``.
    ``precision`` is a value of :func:`resolve`; ``native`` defaults to :func:`native_bf16` (of
    ``device``: a CUDA device has its own)."""
    on_gpu = str(device).startswith("cuda")
    if native is None:
        native = no_native_bf16_reason(device) is None if on_gpu else native_bf16()
    if on_gpu:
        if precision == "fp32":
            return "fp32", f"fp32 requested ({ENV}=fp32 or precision='fp32'), on {device}"
        if native:
            return "checked-bf16", f"native bf16 on {device}"
        return "fp32", f"{no_native_bf16_reason(device)}; exact fp32 on {device}"
    if precision == "fp32":
        return "fp32", f"fp32 requested ({ENV}=fp32 or precision='fp32')"
    if precision == "bf16":
        if native:
            return "checked-bf16", f"bf16 requested ({ENV}=bf16); native bf16"
        why = no_native_bf16_reason() or "no native bf16"
        return "checked-bf16", f"bf16 requested ({ENV}=bf16) although {why}: emulated, slower"
    if native:
        found = ", ".join(sorted(set(BF16_FLAGS) & cpu_flags())) or "native"
        return "checked-bf16", f"native bf16 ({found})"
    why = no_native_bf16_reason() or "no native bf16"
    return "fp32", f"{why}; {NO_BF16_FINDINGS}"


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit of every row."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def logit_scale(logits: np.ndarray) -> float:
    return float(np.median(np.abs(logits).max(axis=1))) if len(logits) else 0.0


@dataclass(frozen=True)
class Calibration:
    """bf16 against fp32 on the unpruned model (see the module docstring). ``kind`` is what the
    outputs are: ``logits`` (a class to protect) or ``vectors`` (sentence vectors: nearest
    neighbours to protect)."""

    error: float  # logits: largest change of a logit difference; vectors: of a unit vector
    scale: float  # median largest |logit|, fp32 (vectors: 1, unit length)
    agreement: float  # share of examples with the same prediction / neighbour before any re-check
    kind: str = "logits"

    def threshold(self, low_logits: np.ndarray) -> float:
        """Examples with a bf16 margin below this are recomputed in fp32."""
        ratio = 1.0 if self.scale <= 0 else logit_scale(low_logits) / self.scale
        return RECHECK_SAFETY * self.error * float(np.clip(ratio, SCALE_FLOOR, 1.0))

    def own_error(self, exact: np.ndarray, low: np.ndarray) -> float:
        """The largest error of the rows a mask computed both ways (:func:`pair_error` or
        :func:`vector_error`)."""
        return vector_error(exact, low) if self.kind == "vectors" else pair_error(exact, low)

    def uncertain(self, low: np.ndarray, current: np.ndarray, exact_rows: np.ndarray, own: float) -> np.ndarray:
        """Rows (bool) to recompute in fp32: close calls (logits), or the sentences whose nearest
        neighbour could differ in fp32 and their candidate neighbours (vectors)."""
        if self.kind == "vectors":
            bound = RECHECK_SAFETY * max(self.error, own)
            return uncertain_neighbours(current, exact_rows, bound)
        return close_calls(low, self, own)


def pair_error(exact: np.ndarray, low: np.ndarray) -> float:
    """The largest change of a logit difference ``l_j - l_k`` over all rows: a bound on how far
    a margin moves between the two precisions."""
    if not len(exact):
        return 0.0
    diff = low.astype(np.float64) - exact
    return float((diff.max(axis=1) - diff.min(axis=1)).max())


def calibrate(exact: np.ndarray, low: np.ndarray, name: str = "bf16"
              ) -> tuple[Calibration | None, str | None]:
    """A :class:`Calibration`, or None and the reason the low precision ``name`` (whose logits
    are ``low``) must not be used."""
    if exact.ndim != 2 or exact.shape[1] < 2:
        return None, "one output per example: no predicted class to protect"
    error = pair_error(exact, low)
    scale = logit_scale(exact)
    if not np.isfinite(error) or error > MAX_RELATIVE_ERROR * scale:
        return None, f"{name} changes the unpruned logits by up to {error:.3g} (scale {scale:.3g})"
    agreement = float(np.mean(exact.argmax(1) == low.argmax(1))) if len(exact) else 1.0
    return Calibration(error, scale, agreement), None


def vector_error(exact: np.ndarray, low: np.ndarray) -> float:
    """The largest distance between a row's unit vector in the two precisions: a bound on how far
    any cosine similarity involving that row moves (``|Δ cos| ≤ δ_i + δ_j + δ_i δ_j``)."""
    if not len(exact):
        return 0.0
    return float(np.linalg.norm(unit_rows(low) - unit_rows(exact), axis=1).max())


def _chunk_rows(n: int) -> int:
    return max(1, NEIGHBOUR_CELLS // max(n, 1))


def uncertain_neighbours(vectors: np.ndarray, exact_rows: np.ndarray, bound: float) -> np.ndarray:
    """Rows (bool) whose nearest neighbour among ``vectors`` (cosine, itself excluded) is not
    certain to be fp32's when every row not in ``exact_rows`` is off by at most ``bound`` (unit
    vector distance), together with each such row's candidates: every row whose similarity could
    still reach the best one's. Once a row and its candidates are exact, its neighbour is fp32's
    (the others stay below the best by more than their error)."""
    n = len(vectors)
    todo = np.zeros(n, dtype=bool)
    if n < 3:  # one candidate: nothing to decide
        return todo
    unit = unit_rows(vectors)
    eps = np.where(exact_rows, 0.0, float(bound))
    step = _chunk_rows(n)
    for start in range(0, n, step):
        sims = unit[start:start + step] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        own_eps = eps[start:start + step, None]
        err = own_eps + eps[None, :] + own_eps * eps[None, :]  # |Δ cos| of every pair
        best = sims.argmax(1)
        floor = sims[rows, best] - err[rows, best]  # the best one's fp32 similarity is at least this
        candidates = sims + err >= floor[:, None]  # (the best one included)
        unsure = candidates.sum(1) > 1
        todo[start + rows[unsure]] = True
        todo |= candidates[unsure].any(0)
    return todo


def neighbour_agreement(exact: np.ndarray, low: np.ndarray) -> float:
    """Share of rows whose nearest neighbour (cosine, itself excluded) is the same in both."""
    if len(exact) < 2:
        return 1.0
    return float(np.mean(nearest_neighbours(exact) == nearest_neighbours(low)))


def calibrate_vectors(exact: np.ndarray, low: np.ndarray, name: str = "bf16"
                      ) -> tuple[Calibration | None, str | None]:
    """A :class:`Calibration` of sentence vectors (``kind="vectors"``), or None and the reason
    the low precision ``name`` must not be used."""
    error = vector_error(exact, low)
    if not np.isfinite(error) or error > MAX_VECTOR_ERROR:
        return None, f"{name} moves the unpruned sentence vectors by up to {error:.3g} (unit length)"
    # the re-check an unpruned-like mask would need: it pays only when few neighbours are close calls
    share = float(uncertain_neighbours(low, np.zeros(len(low), dtype=bool), RECHECK_SAFETY * error).mean())
    if share > MAX_RECHECK_SHARE:
        return None, (f"it would recompute {share:.0%} of the sentences in fp32 (their nearest-neighbour "
                      f"gaps are below what {name} moves a unit sentence vector: up to {error:.3g})")
    return Calibration(error, 1.0, neighbour_agreement(exact, low), kind="vectors"), None


def close_calls(low_logits: np.ndarray, calibration: Calibration, own_error: float = 0.0) -> np.ndarray:
    """Rows (bool) whose bf16 prediction is not certain to be fp32's: a margin below the
    calibration threshold or below ``RECHECK_SAFETY x`` the mask's own measured error."""
    bar = max(calibration.threshold(low_logits), RECHECK_SAFETY * own_error)
    return margins(low_logits) < bar


def guard_rows(n: int, size: int = GUARD_SIZE, seed: int = 0) -> np.ndarray:
    """The fixed random guard sample (bool over ``n`` examples)."""
    rows = np.zeros(n, dtype=bool)
    rows[np.random.default_rng(seed).choice(n, min(n, size), replace=False)] = True
    return rows


def recheck(low_logits: np.ndarray, calibration: Calibration, exact_of,
            known: tuple[np.ndarray, np.ndarray] | None = None,
            measured: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """bf16 logits with every uncertain row replaced by fp32; and how many rows were recomputed.

    ``exact_of(rows)`` returns the fp32 logits of the rows (bool mask) in data-set order.
    ``known`` = (rows, their fp32 logits) already computed elsewhere (the estimate subset's):
    they serve as the guard sample instead of :func:`guard_rows`, at no cost. ``measured``
    (bool, default all) = the rows that were run in bf16: a known row outside it was not, and
    only the others measure the mask's own error (every row outside it must be known).
    """
    n = len(low_logits)
    measured = np.ones(n, dtype=bool) if measured is None else measured
    unknown = np.ones(n, dtype=bool) if known is None else ~known[0]
    if (~measured & unknown).any():
        raise ValueError("every row that was not run in bf16 must be known")
    logits = low_logits.copy()
    done = np.zeros(n, dtype=bool)
    recomputed = 0
    if known is not None and known[0].any():
        rows, exact = known
        logits[rows] = exact
        done |= rows
    elif n:
        guard = guard_rows(n)
        logits[guard] = exact_of(guard)
        recomputed = int(guard.sum())
        done |= guard
    while True:
        own = calibration.own_error(logits[done & measured], low_logits[done & measured])
        todo = calibration.uncertain(low_logits, logits, done, own) & ~done
        if not todo.any():
            return logits, recomputed
        logits[todo] = exact_of(todo)
        recomputed += int(todo.sum())
        done |= todo
