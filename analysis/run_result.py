"""One shape for every training run's result: variants, histories, scores, extras.

A training run compares *variants* of the model (dense, one-shot baseline, the trained one, a
control...) after its *histories* (per-step losses), and may give unit *scores*. Every trainer
returns this shape, ``{"variants", "labels", "histories", "scores", "extras", "notes"}``
(:data:`SHAPE_KEYS`; :func:`prunelens.analysis.training.train_command` adds ``method``, ``params`` and the
bookkeeping), and every dashboard view reads a run through :func:`normalise` into a
:class:`RunResult`, so there is one generic view that any trainer gets for free.

The trainers of 0.1 each wrote their own JSON (ADMM: ``evaluation`` by variant name with
``labels``, ``history`` and ``finetune_history``; PINS/PLATON: ``base``, ``runs`` and ``baseline``;
SNIP: ``evaluation``, ``evaluation_without_training``, ``history`` and a ``control``) until the
round after 0.1, and such runs are still in stores (the shipped ``cached_results/`` among them:
its training runs were computed by those trainers, numerically the same as today's — a run
recomputed now matches its stored variants and scores exactly): :func:`normalise` reads them
too, on read, into the same :class:`RunResult`, so stored runs of every age keep displaying.
Those three trainers still assemble their record under the 0.1 names and return
:func:`shaped` of it: :func:`normalise` is then the one owner of how those names map onto
variants (``dense``, ``baseline``, ``untrained``/``trained``/``control``...), histories (``ADMM``,
``fine-tune``, ``trained``, ``control``...) and labels, for new runs and old ones alike. Nothing is
dropped: what is not a variant, a history or a score list (a run's own summary, a baseline's
criterion, a score's ``tokens``...) stays in ``extras`` under its old name. The store writes
keys sorted, so :meth:`RunResult.as_json` also records the trainer's order of the variants
(``extras["variant_order"]``, :data:`ORDER_KEY`), which :func:`normalise` restores and removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRIC_KEYS = ("accuracy", "accuracy_se", "loss", "loss_se", "margin", "margin_se", "n")
# extras' entry that keeps the variants in the trainer's order (a stored run's keys come back sorted)
ORDER_KEY = "variant_order"
SHAPE_KEYS = ("variants", "labels", "histories", "scores", "extras", "notes")  # what a trainer returns
BOOKKEEPING = ("method", "params", "model", "data", "objective", "seconds", "device", "cached", "run_id", "notes")


@dataclass
class RunResult:
    method: str
    params: dict
    variants: dict[str, dict] = field(default_factory=dict)  # name -> metrics (accuracy, loss, ...)
    labels: dict[str, str] = field(default_factory=dict)  # name -> what the variant is
    histories: dict[str, list[dict]] = field(default_factory=dict)  # name -> [{"step", "loss", ...}]
    scores: dict[str, Any] = field(default_factory=dict)  # unit -> nested list shaped like the unit
    extras: dict = field(default_factory=dict)  # everything else the trainer returned
    notes: list[str] = field(default_factory=list)

    def label(self, name: str) -> str:
        return self.labels.get(name, name.replace("_", " "))

    def variant_rows(self) -> list[dict]:
        """One row per variant: its label and metrics (for a table or bars)."""
        return [{"variant": self.label(name), **{k: m[k] for k in METRIC_KEYS if k in m}}
                for name, m in self.variants.items()]

    def as_json(self) -> dict:
        """The stored shape (:data:`SHAPE_KEYS`): what a trainer returns; ``method`` and
        ``params`` are the run's, added by :func:`prunelens.analysis.training.train_command`."""
        return {"variants": self.variants, "labels": self.labels, "histories": self.histories,
                "scores": self.scores, "extras": {**self.extras, ORDER_KEY: list(self.variants)},
                "notes": self.notes}


def _metrics(value: Any) -> dict | None:
    return value if isinstance(value, dict) and isinstance(value.get("accuracy"), int | float) else None


def _history(value: Any) -> list[dict] | None:
    return value if isinstance(value, list) and value and all(isinstance(r, dict) for r in value) else None


def _rest(part: dict, taken=("evaluation", "history")) -> dict:
    """What a 0.1 sub-result (a PINS run, its baseline, SNIP's control) holds besides its
    evaluation and history: it goes to ``extras``."""
    return {k: v for k, v in part.items() if k not in taken}


def shaped(record: dict) -> dict:
    """A trainer's record under the 0.1 names (any shape :func:`normalise` reads) in the one
    stored shape, :data:`SHAPE_KEYS` only: ``normalise(shaped(r)) == normalise(r)``."""
    return normalise(record).as_json()


def normalise(run: dict) -> RunResult:
    """The :class:`RunResult` of a stored run, whichever trainer (and version) wrote it."""
    out = RunResult(str(run.get("method", "")), dict(run.get("params") or {}),
                    notes=[str(n) for n in run.get("notes") or []])
    used = set(BOOKKEEPING)
    if isinstance(run.get("variants"), dict):  # already this shape
        used |= {"variants", "labels", "histories", "scores", "extras"}
        out.variants = {k: v for k, v in run["variants"].items() if _metrics(v)}
        out.labels = dict(run.get("labels") or {})
        out.histories = {k: v for k, v in (run.get("histories") or {}).items() if _history(v)}
        out.scores = dict(run.get("scores") or {})
        out.extras = dict(run.get("extras") or {})
        order = out.extras.pop(ORDER_KEY, None) or []  # the store sorts keys; this is the trainer's order
        out.variants = {**{k: out.variants[k] for k in order if k in out.variants}, **out.variants}
    if isinstance(run.get("runs"), dict):  # PINS / PLATON: base, runs, baseline
        used |= {"base", "runs", "baseline", "scores"}
        if _metrics(run.get("base")):
            out.variants["dense"] = run["base"]
        summaries = {}
        for name, part in run["runs"].items():
            if isinstance(part, dict):
                if _metrics(part.get("evaluation")):
                    out.variants[name] = part["evaluation"]
                if _history(part.get("history")):
                    out.histories[name] = part["history"]
                if _rest(part):
                    summaries[name] = _rest(part)  # criterion, weight sparsity, layer sparsity...
        if summaries:
            out.extras["runs"] = summaries
        baseline = run.get("baseline")
        if isinstance(baseline, dict):
            if _metrics(baseline.get("evaluation")):
                out.variants["baseline"] = baseline["evaluation"]
                out.labels["baseline"] = f"baseline ({baseline.get('criterion', 'magnitude')}, " \
                                         f"{baseline.get('training', '')})".replace(", )", ")")
            if _history(baseline.get("history")):
                out.histories["baseline"] = baseline["history"]
            if _rest(baseline):
                out.extras["baseline"] = _rest(baseline)  # criterion, training, weight sparsity...
    elif isinstance(run.get("evaluation"), dict) and any(_metrics(v) for v in run["evaluation"].values()):
        # ADMM: evaluations by variant name, with their labels
        used |= {"evaluation", "labels", "history", "finetune_history"}
        out.variants = {k: v for k, v in run["evaluation"].items() if _metrics(v)}
        out.labels = {k: str(v) for k, v in (run.get("labels") or {}).items()}
        for name in ("history", "finetune_history"):
            if _history(run.get(name)):
                out.histories["ADMM" if name == "history" else "fine-tune"] = run[name]
    elif _metrics(run.get("evaluation")):  # SNIP and single-evaluation trainers
        used |= {"evaluation", "evaluation_without_training", "history", "control"}
        if _metrics(run.get("evaluation_without_training")):
            out.variants["untrained"] = run["evaluation_without_training"]
        out.variants["trained"] = run["evaluation"]
        if _history(run.get("history")):
            out.histories["trained"] = run["history"]
        control = run.get("control")
        if isinstance(control, dict):
            if _metrics(control.get("evaluation")):
                out.variants["control"] = control["evaluation"]
                out.labels["control"] = "λ = 0 control"
            if _history(control.get("history")):
                out.histories["control"] = control["history"]
            if _rest(control):
                out.extras["control"] = _rest(control)  # the control's own scores
    elif _history(run.get("history")):
        used.add("history")
        out.histories["run"] = run["history"]
    if not out.scores and "scores" in run:
        used.add("scores")
        scores = run["scores"]
        out.scores = ({k: v for k, v in scores.items() if isinstance(v, list)} if isinstance(scores, dict)
                      else {"head": scores} if isinstance(scores, list) else {})
        if isinstance(scores, dict) and len(out.scores) < len(scores):  # e.g. SNIP's tokens, relative
            out.extras["scores"] = {k: v for k, v in scores.items() if k not in out.scores}
    out.extras = {**{k: v for k, v in run.items() if k not in used}, **out.extras}
    return out
