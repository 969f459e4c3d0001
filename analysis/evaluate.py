"""Masked evaluation: accuracy, loss, margin and the task metric, with standard errors.

Owns the :class:`Evaluator`: it tokenizes a data set once into length-sorted batches, runs the
model under ``torch.inference_mode`` with gate masks applied, and compares a pruned model with the
unpruned one *on the same examples* (paired standard errors of the deltas). The unpruned outputs
are computed once per model + data and reused. What the three reported slots (``accuracy``,
``loss``, ``margin``) measure is the evaluator's objective's (:mod:`prunelens.analysis.objectives`:
labels, agreement with the unpruned model, or the sentence embedding); ``metric_name`` names it.
Under the embedding objective the evaluator's examples are the data's sentences (texts, then
text pairs or positives, each embedded on its own). The results it returns and their statistics
(``Outputs``, ``EvalResult``, ``Comparison``, the task metrics) are :mod:`prunelens.analysis.eval_results`'s.

Speed (see docs/PERFORMANCE.md): masked outputs come from :mod:`prunelens.analysis.fastpath` when it agrees
with the reference forward; :meth:`Evaluator.evaluate_many` shares layer prefixes between masks;
:meth:`Evaluator.estimate` answers first on a fixed random subset with its error bar. Pruned masks
use checked bf16 where the CPU has native bf16 (:mod:`prunelens.analysis.precision`: predictions, or
a sentence encoder's nearest neighbours, equal fp32's; ``PRUNELENS_PRECISION=fp32`` for exact fp32
everywhere), exact fp32 elsewhere; that path is :mod:`prunelens.analysis.checked_path`'s, and
:attr:`Evaluator.masked_path` says which path ran and why.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from prunelens.analysis.checked_path import CheckedLowPrecision
from prunelens.analysis.checkpoints import checkpoint
from prunelens.analysis.data import TextData, merge_batches, tokenize_batches
from prunelens.analysis.errors import ModelError, shown
from prunelens.analysis.eval_results import Comparison, EvalResult, Outputs, correctness, paired_delta
from prunelens.analysis.fastpath import FastEncoder, mask_rows, prefix_keys, unsupported_reason
from prunelens.analysis.prefix import ReferencePrefixCache
from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.models import LoadedModel
from prunelens.analysis.objectives import PairLayout, model_output
from prunelens.analysis.precision import Calibration, resolve

FAST_TOLERANCE = 1e-4  # max |logit difference| fast vs reference path on the probe batch
FAST_BATCH_ROWS = 128  # rows per fast-path batch (2 x the tokenizer's batches of 64)
FAST_BATCH_STRETCH = 2.0  # joined batches' widths differ by at most this factor
ESTIMATE_SIZE = 96  # examples in the first estimate's fixed random subset on a default-sized model
MIN_ESTIMATE_SIZE = 16  # a larger model's first estimate is smaller, down to this (BERT-base: 0.35 s)
DEFAULT_ENCODER_PARAMS = 10_646_784  # MiniLM-L6's encoder (the embedded default): 96 examples ~0.2 s
STAGE_GROWTH = 4  # each anytime stage has this many times the examples of the one before


def available_devices() -> list[str]:
    """Devices the fast path runs on here: ``cpu``, and ``cuda`` where torch sees a GPU."""
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def first_estimate_size(cost_params: int) -> int:
    """Examples in the first estimate: :data:`ESTIMATE_SIZE` on a model the size of the default,
    fewer on a larger one, in proportion to its encoder's cost per token (the parameters a token
    passes through, a shared layer at every depth: BERT-base and ALBERT-base ~8x: 16), so the
    first number arrives in about the same time whatever the model (docs/PERFORMANCE.md)."""
    scaled = round(ESTIMATE_SIZE * DEFAULT_ENCODER_PARAMS / max(1, int(cost_params)))
    return int(min(ESTIMATE_SIZE, max(MIN_ESTIMATE_SIZE, scaled)))


def _needs_grad(masks: Masks | None) -> bool:
    return masks is not None and any(isinstance(v, torch.Tensor) and v.requires_grad
                                     for v in (masks.head, masks.attention, masks.ffn, masks.neuron))


class Evaluator:
    """Evaluates one model on one data set under any gate masks.

    ``max_length`` truncates long inputs (the count is in ``truncated``); batches are sorted by
    length so padding is minimal. The model is only read, never changed.

    Masked outputs come from :mod:`prunelens.analysis.fastpath` (pruned matmuls, [CLS]-only last layer,
    layer-prefix cache, an LRU of whole-mask outputs) when the model supports it and the fast
    path agrees with the reference forward on the first batch; otherwise, and for an explicit
    ``model=`` or masks that need gradients, the reference path (HF forward under hook gates)
    runs. ``fast=False`` forces the reference path.
    """

    OUTPUTS_LRU = 48
    # the checked path's matmul dtype; ``benchmarks/precision.py --candidates`` also measures
    # :data:`prunelens.analysis.fastpath.INT8` here (it does not pay, docs/PERFORMANCE.md; not for the store)
    low_dtype = torch.bfloat16

    def __init__(self, loaded: LoadedModel, data: TextData, batch_size: int = 64,
                 max_length: int = 128, device: str = "cpu", fast: bool = True,
                 precision: str | None = None, objective: str = "labels"):
        loaded.check_data(data)
        self.objective = objective
        self.layout: PairLayout | None = None
        if objective == "embedding":
            data, self.layout = sentences_of(data)
        self.precision = resolve(precision)
        self._fast_batches: list | None = None
        self._setup_lock = threading.RLock()  # the fast-path check and the bf16 calibration
        self.low_precision = CheckedLowPrecision(self)  # the checked bf16 path (see its module)
        self.loaded = loaded
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.batches, self.truncated = tokenize_batches(loaded.tokenizer, data, batch_size, max_length)
        self._base: Outputs | None = None
        self._fast_wanted = fast
        self._fast = None  # FastEncoder once checked
        self.fast_note: str | None = None
        self._outputs_lru: OrderedDict[bytes, Outputs] = OrderedDict()
        self._subsets: dict[tuple[int, int], Evaluator] = {}
        self._reference_prefix: ReferencePrefixCache | None = None  # the reference path's layer cache

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def width(self) -> int:
        """Per-example output width: the classes, or a headless encoder's hidden size."""
        if self.loaded.pooling is not None:
            return int(self.loaded.model.config.hidden_size)
        return int(self.loaded.model.config.num_labels)

    def _wrap(self, logits: np.ndarray, rows: np.ndarray | None = None) -> Outputs:
        """Per-example outputs (of ``rows``, default all) with what the objective compares them to."""
        labels = self.data.labels if rows is None else self.data.labels[rows]
        reference = None
        if self.objective != "labels":
            base = self._base.logits if self._base is not None else None
            if base is None:  # this is the unpruned model's computation
                reference = logits
            else:
                reference = base if rows is None else base[rows]
        layout = self.layout if rows is None else None
        return Outputs(logits, labels, self.objective, reference, layout)

    def _need_base(self, masks: Masks | None, model) -> None:
        """Agreement and embedding measure against the unpruned outputs: compute them first."""
        if self.objective != "labels" and (model is not None or not (masks is None or masks.is_empty())):
            self.base_outputs  # noqa: B018 - computed and kept

    @property
    def notes(self) -> list[str]:
        notes = list(self.data.notes)
        if self.truncated:
            notes.append(f"{self.truncated} example(s) longer than the limit were truncated")
        return notes

    # -- paths --------------------------------------------------------------------------------

    def reference_outputs(self, masks: Masks | None = None, model=None,
                          limit_batches: int | None = None) -> Outputs:
        """The definition: the HF forward under hook gates, batch by batch."""
        if limit_batches is None:
            self._need_base(masks, model)
        model = model if model is not None else self.loaded.model
        batches = self.batches if limit_batches is None else self.batches[:limit_batches]
        logits = np.zeros((len(self.data), self.width), dtype=np.float32)
        device = next(model.parameters()).device  # where the model is (the fast path may be elsewhere)
        with torch.inference_mode(), gated(model, masks or Masks()):
            for batch in batches:
                checkpoint()
                out = model_output(model, batch.to(device).model_inputs(), self.loaded.pooling)
                logits[batch.index.numpy()] = out.float().cpu().numpy()
        return self._collect(logits, batches, limit_batches is not None)

    def _collect(self, logits: np.ndarray, batches, partial: bool) -> Outputs:
        if partial:
            rows = (np.concatenate([b.index.numpy() for b in batches]) if batches
                    else np.zeros(0, int))
            return self._wrap(logits[rows], rows)
        return self._wrap(logits)

    def fast_encoder(self):
        """The checked :class:`~prunelens.analysis.fastpath.FastEncoder`, or None (reference path).

        Checked once; a session asking while another one's check runs waits for its answer
        (it would otherwise see "no fast path" and take the slow reference path)."""
        with self._setup_lock:
            if self._fast is None and self._fast_wanted:
                kind = torch.device(self.device).type
                reason = None if kind in ("cpu", "cuda") else f"no fast path on {self.device}"
                reason = reason or unsupported_reason(self.loaded.model, self.loaded.headless)
                if reason is None and self.batches:
                    encoder = FastEncoder(self.loaded.model, device=self.device,
                                          pooling=self.loaded.pooling)
                    probe = self.batches[:1]
                    fast = encoder.logits(probe, None, use_cache=False)[0].numpy()
                    ref = self.reference_outputs(limit_batches=1).logits  # in batch order too
                    diff = float(np.abs(fast - ref).max()) if len(ref) else 0.0
                    if diff <= FAST_TOLERANCE:
                        self._fast = encoder
                    else:
                        reason = f"fast path differs from the reference by {diff:.2e}"
                self.fast_note = reason
                self._fast_wanted = False  # checked
        return self._fast

    # -- the checked bf16 path (:class:`~prunelens.analysis.checked_path.CheckedLowPrecision`) --

    def low_encoder(self):
        """The calibrated bf16 encoder, or None (fp32 only): :meth:`CheckedLowPrecision.low_encoder`."""
        return self.low_precision.low_encoder()

    @property
    def masked_path(self) -> tuple[str, str]:
        """(path, why) of pruned masks' evaluation (:attr:`CheckedLowPrecision.masked_path`)."""
        return self.low_precision.masked_path

    @property
    def masked_precision(self) -> str:
        """``"bf16"``, ``"fp32"`` or ``"int8"`` (:attr:`CheckedLowPrecision.masked_precision`)."""
        return self.low_precision.masked_precision

    @property
    def low_batches(self) -> tuple[list, list, np.ndarray]:
        """The bf16 path's ``main`` and ``rest`` batches (:attr:`CheckedLowPrecision.batches`)."""
        return self.low_precision.batches

    @property
    def calibration(self) -> Calibration | None:
        """The checked path's calibration (None until it ran, or where it did not)."""
        return self.low_precision.calibration

    @property
    def low_note(self) -> str | None:
        """Why pruned masks run in fp32 (None on the checked bf16 path)."""
        return self.low_precision.note

    @property
    def rechecked(self) -> int:
        """Close calls recomputed in fp32 by the last bf16 evaluation."""
        return self.low_precision.rechecked

    @property
    def _low(self):
        """The calibrated bf16 encoder if :meth:`low_encoder` ran (None otherwise): no calibration."""
        return self.low_precision.encoder

    def _known_exact(self, masks: Masks | None) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`CheckedLowPrecision.known_exact`."""
        return self.low_precision.known_exact(masks)

    def precision_for(self, masks: Masks | None = None) -> str:
        """The precision :meth:`outputs` uses for ``masks`` (the unpruned model is always fp32)."""
        if masks is None or masks.is_empty() or not self._fast_usable(masks, None):
            return "fp32"
        return self.masked_precision

    @property
    def fast_batches(self) -> list:
        """The batches the fast path runs on: pairs of consecutive length-sorted batches joined
        (its hidden states are packed, so the extra padding costs only in the attention, and
        half as many, larger operations run). Same examples, same numbers."""
        if self._fast_batches is None:
            self._fast_batches = merge_batches(self.batches, FAST_BATCH_ROWS, FAST_BATCH_STRETCH)
        return self._fast_batches

    def _batches_of(self, rows: np.ndarray, batches: list | None = None,
                    max_rows: int = FAST_BATCH_ROWS, max_stretch: float = FAST_BATCH_STRETCH) -> list:
        """The examples where ``rows`` is true, cut out of ``batches`` (default: the tokenized
        ones) and joined (:func:`~prunelens.analysis.data.merge_batches`); as :attr:`fast_batches` by default."""
        parts = [batch.rows(torch.as_tensor(rows[batch.index.numpy()]))
                 for batch in (self.batches if batches is None else batches)]
        return merge_batches([part for part in parts if len(part.index)], max_rows, max_stretch)

    def _fast_usable(self, masks: Masks | None, model) -> bool:
        if model is not None and model is not self.loaded.model:
            return False
        if _needs_grad(masks):
            return False
        return self.fast_encoder() is not None

    def _prefix_outputs(self, masks: Masks | None, limit_batches: int | None) -> Outputs:
        """The reference forward through the layer-prefix cache (:mod:`prunelens.analysis.prefix`)."""
        batches = self.batches if limit_batches is None else self.batches[:limit_batches]
        if self._reference_prefix is None:
            self._reference_prefix = ReferencePrefixCache()
        model = self.loaded.model
        per_batch = self._reference_prefix.logits(model, batches, masks, next(model.parameters()).device)
        logits = np.zeros((len(self.data), model.config.num_labels), dtype=np.float32)
        for batch, out in zip(batches, per_batch):
            logits[batch.index.numpy()] = out.float().cpu().numpy()
        return self._collect(logits, batches, limit_batches is not None)

    def outputs(self, masks: Masks | None = None, model=None, limit_batches: int | None = None) -> Outputs:
        """Logits of every example (data-set order) with ``masks`` applied to ``model``."""
        if limit_batches is None:
            self._need_base(masks, model)
        if not self._fast_usable(masks, model):
            # any family: the reference path's cache (it ends in logits: a headless encoder's pooled
            # vector takes the plain reference forward)
            if (model is None or model is self.loaded.model) and not _needs_grad(masks) and not self.loaded.headless:
                return self._prefix_outputs(masks, limit_batches)
            return self.reference_outputs(masks, model, limit_batches)
        encoder = self._fast
        if limit_batches is not None:
            batches = self.batches[:limit_batches]
            per_batch = encoder.logits(batches, masks, use_cache=False)
            return self._collect(self._scatter(batches, per_batch), batches, True)
        key = prefix_keys(mask_rows(masks, len(encoder.layers)))[-1]
        hit = self._outputs_lru.get(key)
        if hit is not None:
            self._outputs_lru.move_to_end(key)
            return hit
        if self.precision_for(masks) != "fp32":  # checked bf16 (or the int8 candidate)
            logits = self.low_precision.logits(masks)
        else:
            logits = self._scatter(self.fast_batches, encoder.logits(self.fast_batches, masks))
        out = self._wrap(logits)
        self._outputs_lru[key] = out
        while len(self._outputs_lru) > self.OUTPUTS_LRU:
            self._outputs_lru.popitem(last=False)
        return out

    def _scatter(self, batches, per_batch: list[torch.Tensor], into: np.ndarray | None = None) -> np.ndarray:
        """Per-batch logits written to their examples' rows of ``into`` (default: a zero array)."""
        logits = into if into is not None else np.zeros((len(self.data), self.width), dtype=np.float32)
        for batch, out in zip(batches, per_batch):
            logits[batch.index.numpy()] = out.float().numpy()
        return logits

    def clear_caches(self) -> None:
        """Drop cached layer inputs and outputs (the unpruned outputs stay)."""
        self._outputs_lru.clear()
        self._reference_prefix = None
        for encoder in (self._fast, self._low):
            if encoder is not None:
                encoder.caches.clear()
        self._subsets.clear()

    # -- results ------------------------------------------------------------------------------

    @property
    def base_outputs(self) -> Outputs:
        if self._base is None:
            base = self.outputs(None)
            finite = np.isfinite(base.logits)
            if not finite.all():  # scored as if they were numbers, NaN would read as accuracy
                rows = np.flatnonzero(~finite.all(axis=1))
                kind = "NaN" if np.isnan(base.logits).any() else "infinite"
                raise ModelError(
                    f"model {shown(self.loaded.name)} gives {kind} logits on {len(rows)} of {self.n} examples "
                    f"(the first: example {int(rows[0])}) without any pruning: its weights or config.json "
                    "are broken (e.g. layer_norm_eps <= 0, or weights holding NaN or inf); nothing is scored")
            self._base = base
        return self._base

    @property
    def base(self) -> EvalResult:
        return EvalResult.from_outputs(self.base_outputs, self.data.metric)

    def _pruned_outputs(self, masks: Masks | None, model) -> Outputs:
        if (masks is None or masks.is_empty()) and model is None:
            return self.base_outputs
        return self.outputs(masks, model)

    def evaluate(self, masks: Masks | None = None, model=None) -> EvalResult:
        if (masks is None or masks.is_empty()) and model is None:
            return self.base
        return EvalResult.from_outputs(self.outputs(masks, model), self.data.metric)

    def compare(self, masks: Masks | None = None, model=None) -> Comparison:
        """Pruned against unpruned on the same examples, with paired standard errors."""
        pruned = self._pruned_outputs(masks, model)
        return Comparison(
            base=self.base,
            pruned=EvalResult.from_outputs(pruned, self.data.metric),
            delta=paired_delta(self.base_outputs, pruned, self.data.metric),
            correct=correctness(pruned),
        )

    def record(self, masks: Masks | None = None, model=None) -> dict:
        """:meth:`evaluate`'s metrics as a dict with ``"correct"`` (:func:`correctness`): how a
        training run stores one evaluated model."""
        out = (self.base_outputs if (masks is None or masks.is_empty()) and model is None
               else self.outputs(masks, model))
        return {**EvalResult.from_outputs(out, self.data.metric).as_dict(), "correct": correctness(out)}

    def outputs_many(self, masks_list: list[Masks | None]) -> list[Outputs]:
        """Outputs for several masks, computed in an order that shares layer prefixes."""
        if not masks_list:
            return []
        encoder = self.fast_encoder()
        order = list(range(len(masks_list)))
        if encoder is not None:
            rows = [[r.key() for r in mask_rows(m, len(encoder.layers))] for m in masks_list]
            order.sort(key=lambda i: rows[i])
        results: list[Outputs | None] = [None] * len(masks_list)
        for i in order:
            results[i] = self._pruned_outputs(masks_list[i], None)
        return results  # type: ignore[return-value]

    def evaluate_many(self, masks_list: list[Masks | None]) -> list[EvalResult]:
        """``[evaluate(m) for m in masks_list]``, sharing layer prefixes between masks."""
        return [EvalResult.from_outputs(o, self.data.metric) for o in self.outputs_many(masks_list)]

    def compare_many(self, masks_list: list[Masks | None]) -> list[Comparison]:
        base = self.base
        return [Comparison(base, EvalResult.from_outputs(o, self.data.metric),
                           paired_delta(self.base_outputs, o, self.data.metric))
                for o in self.outputs_many(masks_list)]

    # -- first estimate -----------------------------------------------------------------------

    def subset_rows(self, size: int, seed: int) -> np.ndarray:
        """The examples of :meth:`subset` (sorted indices)."""
        return np.sort(np.random.default_rng(seed).choice(self.n, size, replace=False))

    @property
    def estimate_size(self) -> int:
        """Examples in the first estimate (:func:`first_estimate_size` of this model)."""
        return first_estimate_size(self.loaded.inventory.cost_params)

    @property
    def estimate_sizes(self) -> list[int]:
        """The anytime stages before the full data: the first estimate, then subsets
        :data:`STAGE_GROWTH` times larger while one is at most a quarter of the data (on the
        default: the first estimate alone; on BERT-base with 872 examples: 16, then 64); none on
        data under twice the first estimate (the full answer comes about as fast)."""
        # a first estimate only on data at least twice its size: on 128 sentences, an estimate
        # on 96 of them would be a stage that says nothing the full data won't say as fast
        sizes = [self.estimate_size] if self.estimate_size * 2 <= self.n else []
        while sizes and sizes[-1] * STAGE_GROWTH * 4 <= self.n:
            sizes.append(sizes[-1] * STAGE_GROWTH)
        return sizes

    def subset(self, size: int | None = None, seed: int = 0) -> Evaluator:
        """An evaluator on a fixed random subset of ``size`` examples (default: the first
        estimate's; the whole set if smaller)."""
        size = self.estimate_size if size is None else int(size)
        if size >= self.n:
            return self
        key = (size, seed)
        if key not in self._subsets:
            rows = self.subset_rows(size, seed)
            data = self.data.rows(rows, split=f"{self.data.split}[subset {size}, seed {seed}]")
            child = Evaluator(self.loaded, data, self.batch_size, self.max_length, self.device,
                              fast=False, precision="fp32",  # the estimate is small: exact
                              objective=self.objective)
            child._fast = self.fast_encoder()  # same model: share the checked encoder and plans
            child.subset_rows = rows
            self._subsets[key] = child
        return self._subsets[key]

    def estimate(self, masks: Masks | None = None, size: int | None = None, seed: int = 0) -> Comparison:
        """A quick answer on a fixed random subset (default: the first estimate's size), with
        paired standard errors (the error bar); replace it with :meth:`compare` when that is
        ready. The anytime stages are :attr:`estimate_sizes`."""
        return self.subset(size, seed).compare(masks)


def sentences_of(data: TextData) -> tuple[TextData, PairLayout | None]:
    """The embedding objective's examples: every sentence of ``data`` on its own (its texts, then
    its text pairs or positives), and how they pair up (STS scores, retrieval)."""
    if data.text_pairs is None:
        return data, None
    texts = list(data.texts) + list(data.text_pairs)
    layout = PairLayout(data.pair_kind or "pairs", len(data), data.scores)
    flat = TextData(data.name, data.split, texts, np.full(len(texts), -1, dtype=np.int64),
                    notes=list(data.notes), labelled=False)
    return flat, layout
