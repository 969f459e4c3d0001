"""The checked low-precision path of one :class:`~prunelens.analysis.evaluate.Evaluator`.

Owns :class:`CheckedLowPrecision`: whether the evaluator's pruned masks run in checked bf16 (the
calibration, once per evaluator, and the path and reason it gives), the bf16
:class:`~prunelens.analysis.fastpath.FastEncoder` and its batches (``main`` and the estimate
subset's ``rest``), and the fp32 recheck of each bf16 evaluation's close calls. The rules (when bf16
is native, what the calibration accepts, which rows are close calls) are
:mod:`prunelens.analysis.precision`'s; this class runs them for one evaluator, through that
evaluator's batches, fp32 fast encoder and setup lock.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from prunelens.analysis.fastpath import FastEncoder, mask_rows, prefix_keys
from prunelens.analysis.gates import Masks
from prunelens.analysis.precision import KNOWN_GUARD, Calibration, calibrate, calibrate_vectors, recheck
from prunelens.analysis.precision import masked_path as path_choice


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere), so a
    dropped layer cache lowers the process's resident memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class CheckedLowPrecision:
    """Checked bf16 (or the measured-only int8 candidate, the evaluator's ``low_dtype``) for one
    evaluator's pruned masks; the evaluator delegates ``low_encoder``, ``masked_path``,
    ``masked_precision``, ``low_batches``, ``calibration``, ``low_note`` and ``rechecked`` here."""

    def __init__(self, evaluator):
        self.ev = evaluator
        self.encoder: FastEncoder | None = None  # the bf16 FastEncoder once calibrated
        self.checked = False
        self.calibration: Calibration | None = None
        self.note: str | None = None
        self.path: tuple[str, str] | None = None  # see masked_path
        self.split: tuple[list, list, np.ndarray] | None = None  # see batches
        self.rechecked = 0  # close calls recomputed in fp32 by the last bf16 evaluation

    def low_encoder(self) -> FastEncoder | None:
        """The calibrated bf16 :class:`~prunelens.analysis.fastpath.FastEncoder`, or None (fp32 only).

        The first call runs the unpruned model in bf16 over the whole data set (the calibration,
        which also fills the bf16 layer cache with the unpruned layer inputs)."""
        with self.ev._setup_lock:  # sessions sharing this evaluator calibrate once
            if not self.checked:
                self._calibrate()
        return self.encoder

    def _calibrate(self) -> None:
        from prunelens.analysis.precision import native_bf16, no_native_bf16_reason

        ev = self.ev
        reason = None
        on_gpu = str(ev.device).startswith("cuda")
        native = native_bf16() if not on_gpu else no_native_bf16_reason(ev.device) is None
        path, why = path_choice(ev.precision, native, ev.device)
        if ev.precision == "fp32":
            reason = "fp32 requested"
        elif ev.precision == "auto" and not native:
            reason = f"{'this GPU' if on_gpu else 'this CPU'} has no native bf16 matmul"
        elif ev.layout is not None:
            reason = f"{ev.layout.kind} pairs"
            path, why = "fp32", (f"exact fp32: the data pairs its sentences ({ev.layout.kind}), and the "
                                 "checked bf16 path protects nearest neighbours, not pair ranks")
        elif ev.fast_encoder() is None or not ev.batches:
            reason = "the fast path is off"
            path, why = "fp32", f"the fast path is off ({ev.fast_note or 'no data'})"
        if reason is None:
            encoder = FastEncoder(ev.loaded.model, dtype=ev.low_dtype, device=ev.device,
                                  pooling=ev.loaded.pooling)
            low = self.low_logits(encoder, None)  # (the unpruned layer inputs stay cached)
            name = "bf16" if ev.low_dtype == torch.bfloat16 else "int8"
            check = calibrate_vectors if ev.loaded.pooling is not None else calibrate
            self.calibration, reason = check(ev.base_outputs.logits, low, name)
            if reason is not None:
                path, why = "fp32", f"checked {name} refused: {reason}"
            else:
                if name != "bf16":
                    path, why = f"checked-{name}", f"{name} requested (low_dtype)"
                scale = ("unit sentence vectors" if self.calibration.kind == "vectors"
                         else f"logit scale {self.calibration.scale:.3g}")
                why += f"; calibration error {self.calibration.error:.3g} ({scale})"
                self.encoder = encoder
                # pruned masks no longer start from the fp32 layer inputs: free them (re-checks
                # run without that cache); the unpruned fp32 outputs stay in ``base_outputs``
                ev._fast.caches.pop(id(ev.fast_batches), None)
                release_free_memory()
        self.note = reason
        self.path = (path, why)
        self.checked = True  # only once it ran to the end: an interrupted one runs again

    @property
    def masked_path(self) -> tuple[str, str]:
        """(path, why) of pruned masks' evaluation: ``"checked-bf16"`` or ``"fp32"``, and the
        reason (the CPU's bf16 support, the requested precision, the calibration; see
        :func:`prunelens.analysis.precision.masked_path`)."""
        self.low_encoder()
        return self.path or ("fp32", self.note or "fp32")

    @property
    def masked_precision(self) -> str:
        """``"bf16"`` when pruned masks are evaluated on the checked bf16 path, else ``"fp32"``
        (``"int8"`` for the measured-only int8 candidate, which the store has no key for)."""
        if self.low_encoder() is None:
            return "fp32"
        return "bf16" if self.ev.low_dtype == torch.bfloat16 else "int8"

    @property
    def batches(self) -> tuple[list, list, np.ndarray]:
        """The bf16 path's batches: ``main`` (every example but most of the default estimate
        subset's) and ``rest`` (those), with ``rest``'s rows (bool). Once a first estimate computed
        a mask's subset exactly, ``rest`` is not run in bf16 for that mask: its exact logits are
        used as they are, and the ``KNOWN_GUARD`` subset examples left in ``main`` measure the
        mask's own error (:func:`prunelens.analysis.precision.recheck`)."""
        ev = self.ev
        with ev._setup_lock:  # one split per evaluator: its layer caches are keyed by the lists
            if self.split is None:
                rest = np.zeros(ev.n, dtype=bool)
                if ev.estimate_size < ev.n:
                    rows = ev.subset_rows(ev.estimate_size, 0)
                    rest[np.random.default_rng(0).choice(rows, max(0, len(rows) - KNOWN_GUARD),
                                                         replace=False)] = True
                self.split = (ev._batches_of(~rest), ev._batches_of(rest), rest)
            return self.split

    def low_logits(self, encoder: FastEncoder, masks: Masks | None, with_rest: bool = True) -> np.ndarray:
        """bf16 logits of :attr:`batches` (data-set order); ``rest``'s rows stay 0 without it."""
        main, rest, _ = self.batches
        low = self.ev._scatter(main, encoder.logits(main, masks))
        if rest and with_rest:
            self.ev._scatter(rest, encoder.logits(rest, masks), into=low)
        return low

    def logits(self, masks: Masks | None) -> np.ndarray:
        """Every example's logits under ``masks``: bf16, with the close calls rechecked in fp32
        and the rows a first estimate computed exactly taken as they are."""
        rest_rows = self.batches[2]
        known = self.known_exact(masks)
        # ``rest`` need not run when this mask's estimate computed it exactly
        skip_rest = known is not None and bool(known[0][rest_rows].all())
        low = self.low_logits(self.encoder, masks, with_rest=not skip_rest)
        return self._recheck(low, masks, known, ~rest_rows if skip_rest else None)

    def _recheck(self, low_logits: np.ndarray, masks: Masks | None,
                 known: tuple[np.ndarray, np.ndarray] | None = None,
                 measured: np.ndarray | None = None) -> np.ndarray:
        """Recompute the bf16 close calls (or uncertain nearest neighbours) in fp32 (see
        :mod:`prunelens.analysis.precision`)."""
        ev = self.ev

        def exact_of(rows: np.ndarray) -> np.ndarray:
            subs = ev._batches_of(rows, ev.fast_batches, ev.batch_size, float("inf"))
            logits = ev._scatter(subs, ev._fast.logits(subs, masks, use_cache=False))
            return logits[rows]

        logits, self.rechecked = recheck(low_logits, self.calibration, exact_of, known, measured)
        return logits

    def known_exact(self, masks: Masks | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, fp32 logits) of this mask already computed by an estimate subset, if any."""
        ev = self.ev
        key = prefix_keys(mask_rows(masks, len(ev._fast.layers)))[-1]
        for child in ev._subsets.values():
            hit = child._outputs_lru.get(key)
            if hit is not None:
                rows = np.zeros(ev.n, dtype=bool)
                rows[child.subset_rows] = True
                return rows, hit.logits  # subset_rows is sorted: the subset's data order
        return None
