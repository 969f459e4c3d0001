"""The session: one loaded model on one data split, with its store, device, objective and evaluator.

:class:`Session` is what every method, trainer and operation takes (it replaced
``operations.Session`` and ``methods.base.Session``, the same idea written twice), and it is the
one owner of *where a result lives in the store*:

- :meth:`Session.keys`: every key a result may live under, in the order they are read — the exact
  key, and for results made of masked evaluations (:data:`PRECISION_KINDS`) the checked-bf16 key
  unless the session is held to fp32 (:mod:`prunelens.analysis.precision`). The objective is part
  of the key only when it is not the default ``"labels"``, so every key written before it existed
  still reads. The data in a key is the data the result is computed from: the loaded data's
  fingerprint, except for scores of a method that reads only the training split
  (:meth:`Method.reads_training_split <prunelens.analysis.methods.base.Method.reads_training_split>`)
  when the data names one — those are keyed by the training split
  (:func:`prunelens.analysis.batches.training_fingerprint`), so another ``--limit`` finds them;
  the key they had before (the loaded data's) is still read after it, so nothing stored is lost;
- :meth:`Session.lookup`: the stored result under the first of those keys that holds a usable one
  (scores of another shape than this model's are warned about and skipped; entries from before
  precisions were recorded read as fp32);
- :meth:`Session.save` and :meth:`Session.read_through`: the one get / compute / put — a result is
  written under the key of the precision it records (``result["precision"]``, default fp32).

The CLI, the dashboard (``dashboard/results.py`` is a memo over :meth:`Session.lookup`), sweeps
and ``prunelens precompute`` therefore read and write the same entries. Key construction happens
here (and in :mod:`prunelens.analysis.cache`, which hashes a key) and nowhere else.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from prunelens.analysis.cache import Key, ResultStore, StoreWarning
from prunelens.analysis.data import TextData
from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.models import LoadedModel
from prunelens.analysis.precision import resolve
from prunelens.analysis.store_schema import array_problem

Progress = Callable[[float, str], None]

DEFAULT_OBJECTIVE = "labels"  # what importance is measured against; kept out of the store key
# kinds of results made of masked evaluations: an answer on the checked-bf16 path is kept apart
# from the exact one (its key carries ``"precision": "bf16"``); a scorer that does not evaluate
# masks only ever writes the exact key
PRECISION_KINDS = ("scores", "mask-eval")
# the label of a training-split score's key from before it was keyed by the training split
LEGACY_DATA_KEY = "(evaluation data)"


def no_progress(fraction: float, message: str = "") -> None:
    """Default progress sink: does nothing."""


# Which scores a method computes from the training split alone (their store key holds that split's
# fingerprint): ``(method name, params) -> bool``. The methods layer installs it when imported
# (:mod:`prunelens.analysis.methods`), so the session knows it without importing a later layer.
_training_split_rule: Callable[[str, dict], bool] | None = None


def set_training_split_rule(rule: Callable[[str, dict], bool]) -> None:
    global _training_split_rule
    _training_split_rule = rule


@dataclass
class Session:
    """What a method, a trainer and an operation may use: the loaded model, the data, the store,
    the device, the objective, the shared evaluator (created on first use) and a progress sink."""

    loaded: LoadedModel
    data: TextData | None
    store: ResultStore = field(default_factory=ResultStore)
    device: str = "cpu"
    _evaluator: Evaluator | None = field(default=None, repr=False)
    objective: str = DEFAULT_OBJECTIVE
    progress: Progress = field(default=no_progress, repr=False)
    objective_note: str | None = None  # why this objective, when it was chosen for the user

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.loaded, self.data, device=self.device, objective=self.objective)
        return self._evaluator

    @property
    def notes(self) -> list[str]:
        """The objective's note (when chosen for the user), then the evaluator's (data, truncation)."""
        notes = self.evaluator.notes if self._evaluator is not None else list(self.data.notes)
        return ([self.objective_note] if self.objective_note else []) + notes

    def with_progress(self, progress: Progress) -> Session:
        """The same session (same evaluator) reporting to ``progress``."""
        return replace(self, _evaluator=self.evaluator, progress=progress)

    def describe(self) -> dict:
        return {"model": self.loaded.describe(), "data": self.data.describe(), "objective": self.objective}

    # ------------------------------------------------------------------------------------------
    # where a result lives

    @property
    def precision(self) -> str:
        """The precision the evaluator is held to (``fp32``, ``bf16`` or ``auto``): with
        anything but fp32, masked answers may also live under the checked-bf16 key."""
        return self._evaluator.precision if self._evaluator is not None else resolve(None)

    def _key(self, data: str, kind: str, method: str, unit: str, params: dict) -> Key:
        if self.objective != DEFAULT_OBJECTIVE:
            params = {**params, "objective": self.objective}
        return Key.make(self.loaded.fingerprint, data, kind, method, unit, params)

    def _data_identity(self, kind: str, method: str, params: dict) -> str:
        """The fingerprint of the data a result is computed from: the training split's for
        scores that read only it (when the loaded data names one), else the loaded data's."""
        if kind != "scores" or not method or self.data.train_source is None:
            return self.data.fingerprint
        from prunelens.analysis.batches import training_fingerprint
        from prunelens.analysis.errors import PrunelensError

        if _training_split_rule is None:  # a bug: the methods layer installs it when imported
            raise RuntimeError("prunelens.analysis.methods is not imported: no rule says which "
                               "scores read only the training split")
        try:
            if not _training_split_rule(method, params):
                return self.data.fingerprint
            return training_fingerprint(self)
        except PrunelensError:  # an unknown method, a train split that cannot be read: the data's
            return self.data.fingerprint

    def key(self, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> Key:
        """The exact key of a result (the first of :meth:`keys`)."""
        params = dict(params or {})
        return self._key(self._data_identity(kind, method, params), kind, method, unit, params)

    def keys(self, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> dict[str, Key]:
        """Every key a result may live under, in reading order (exact first), labelled by its
        precision (``fp32``, ``bf16``); a training-split score's key from before it was keyed
        by the training split follows its precision's, labelled ``"<precision> (evaluation data)"``."""
        params = dict(params or {})
        data = self._data_identity(kind, method, params)
        by_precision = {"fp32": params}
        if kind in PRECISION_KINDS and self.precision != "fp32":
            by_precision["bf16"] = {**params, "precision": "bf16"}
        keys = {}
        for precision, with_precision in by_precision.items():
            keys[precision] = self._key(data, kind, method, unit, with_precision)
            if data != self.data.fingerprint:
                keys[f"{precision} {LEGACY_DATA_KEY}"] = self._key(self.data.fingerprint, kind, method, unit,
                                                                    with_precision)
        return keys

    def lookup(self, kind: str, method: str = "", unit: str = "", params: dict | None = None,
               fits: Callable[[Any], bool] | None = None) -> Any | None:
        """The stored result under the first of :meth:`keys` that holds a usable one, else None.

        Scores whose shape is not this model's ``unit`` shape are warned about and skipped (the
        store checks an entry's form, only the session knows the model); ``fits`` may refuse
        an entry for another reason. A result of :data:`PRECISION_KINDS` carries the precision
        of the key it came from (entries from before precisions were recorded are fp32)."""
        shape = self._score_shape(unit) if kind == "scores" else None
        for label, key in self.keys(kind, method, unit, params).items():
            precision = label.split()[0]
            hit = self.store.get(key)
            if hit is None:
                continue
            if shape is not None:
                problem = array_problem(hit.get("scores"), shape)
                if problem:
                    warnings.warn(f"stored {method} {unit} scores do not fit this model ({problem}); "
                                  "recomputing", StoreWarning, stacklevel=2)
                    continue
            if fits is not None and not fits(hit):
                continue
            return {**hit, "precision": precision} if kind in PRECISION_KINDS else hit
        return None

    def save(self, kind: str, method: str, unit: str, params: dict | None, result: Any) -> bool:
        """Store ``result`` under its exact key, or for :data:`PRECISION_KINDS` under the key of
        the precision it records (``result["precision"]``, fp32 when it records none)."""
        precision = result.get("precision", "fp32") if kind in PRECISION_KINDS else "fp32"
        return self.store.put(self.keys(kind, method, unit, params)[precision], result)

    def read_through(self, kind: str, method: str, unit: str, params: dict | None,
                     compute: Callable[[], Any], use_store: bool = True,
                     fits: Callable[[Any], bool] | None = None) -> tuple[Any, bool]:
        """``(result, from the store?)``: :meth:`lookup`, else ``compute()`` and :meth:`save`."""
        if use_store:
            hit = self.lookup(kind, method, unit, params, fits)
            if hit is not None:
                return hit, True
        result = compute()
        if use_store:
            self.save(kind, method, unit, params, result)
        return result, False

    def is_stored(self, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> bool:
        return self.lookup(kind, method, unit, params) is not None

    def _score_shape(self, unit: str) -> tuple[int, ...] | None:
        """The shape of ``unit``'s scores on this model (None: not fixed by the layout)."""
        try:
            return self.loaded.inventory.unit_shape(unit)
        except KeyError:
            return None
