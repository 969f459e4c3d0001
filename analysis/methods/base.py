"""The shared method contract: parameter declarations, the Method base, the Trainer.

A method declares its parameters once (:class:`Param`: name, type, range, default, one-line
help); the CLI parses ``--param k=v`` and the dashboard builds its widgets from the same
declarations. ``Method.score`` returns scores where **higher means more important**, shaped
by ``Inventory.unit_shape(unit)``.

Bounded work (SECURITY.md): every numeric parameter has a finite range, and a method (and a
training mode) declares what a setting costs (``cost`` -> :class:`Work`, in forward-pass
equivalents). ``validate`` refuses a setting over the budgets below, so the CLI's ``--param``,
sweep specs and dashboard URLs are held by the same declaration; the dashboard asks for a click
before computing a setting above :data:`EXPENSIVE_WORK` (:meth:`Method.is_expensive`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from prunelens.analysis.data import TextData
from prunelens.analysis.errors import ParamError
from prunelens.analysis.layout import UNITS  # noqa: F401 (the methods' import; the one list is layout's)
from prunelens.analysis.models import Inventory, LoadedModel
from prunelens.analysis.session import Progress, Session, no_progress  # noqa: F401 (the methods' imports)

KINDS = ("int", "float", "bool", "choice")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a method."""

    name: str
    kind: str  # int | float | bool | choice
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    log: bool = False  # spans orders of magnitude: the UI uses a number input stepping by ~10%
    step: float | None = None  # the UI's step for a float slider (default: 1/100 of the range)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter '{self.name}': kind must be one of {KINDS}")
        if self.kind in ("int", "float") and not (
                self.low is not None and self.high is not None
                and math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            # bounded work: a URL, a sweep or --param can never ask for more than the range allows
            raise ValueError(f"parameter '{self.name}' needs a finite range [low, high]")

    def clamp(self, value: Any) -> Any:
        """A numeric value moved into the declared range (the dashboard's URL values)."""
        if self.kind not in ("int", "float"):
            return value
        value = min(max(value, self.low), self.high)
        return int(value) if self.kind == "int" else float(value)

    def parse(self, raw: Any) -> Any:
        """Validate and convert ``raw`` (a CLI string or a widget value)."""
        value = self._convert(raw)
        if self.kind in ("int", "float") and not self.low <= value <= self.high:
            raise ParamError(f"parameter '{self.name}' must be in [{self.low}, {self.high}], got {value}")
        return value

    def parse_clamped(self, raw: Any) -> tuple[Any, bool]:
        """``(value, moved)``: ``raw`` converted, a number outside the range moved to its nearest
        end (``moved`` True); a value of the wrong type is refused like :meth:`parse`."""
        value = self._convert(raw)
        clamped = self.clamp(value)
        return clamped, clamped != value

    def _convert(self, raw: Any) -> Any:
        where = f"parameter '{self.name}'"
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ParamError(f"{where} must be true or false, got {raw!r}")
        if self.kind == "choice":
            if raw is None and None in self.choices:
                return None
            text = str(raw).strip()
            for choice in self.choices:
                if text == str(choice):
                    return choice
            raise ParamError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {raw!r}")
        kind = "an integer" if self.kind == "int" else "a number"
        if isinstance(raw, bool):
            raise ParamError(f"{where} must be {kind}, got {raw!r}")
        try:
            if self.kind == "int":
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                if isinstance(raw, str) and not raw.strip().lstrip("+-").isdigit():
                    raise ValueError
                value = int(raw)
            else:
                value = float(raw)
                if math.isnan(value) or math.isinf(value):
                    raise ValueError
        except (TypeError, ValueError):
            raise ParamError(f"{where} must be {kind}, got {raw!r}") from None
        return value

    def describe(self) -> dict:
        d = {"name": self.name, "type": self.kind, "default": self.default, "help": self.help}
        if self.low is not None or self.high is not None:
            d["range"] = [self.low, self.high]
        if self.choices:
            d["choices"] = list(self.choices)
        if self.log:
            d["scale"] = "log"
        return d


# ---------------------------------------------------------------------------------------------
# bounded work
#
# Work is counted in forward-pass equivalents: one example through the encoder's forward pass = 1,
# a backward pass 2 more. The budgets are sized for a BERT-base model (12 layers x 12 heads,
# hidden 768) on a 2-core, 24 GB machine, where one forward-pass equivalent takes about 0.05 s
# (MiniLM-L6, the embedded default, is about 8x faster).

EXPENSIVE_WORK = 256  # above this, the dashboard asks for a click when the time estimate is long too
MAX_SCORE_WORK = 16_384  # one score computation, beyond passes over the loaded data (~15 min)
MAX_TRAIN_WORK = 100_000  # one training run, beyond evaluations of the loaded data (~1.5 h)
MAX_BATCH_TOKENS = 8_192  # tokens in one gradient batch (batch_size x max_length): ~2 GB of
#                           BERT-base activations kept for the backward pass
SMALL_DATA = 64  # the evaluation set on which :attr:`Method.expensive` (the listing's label) is judged
# what ``validate`` judges a setting on: BERT-base's inventory
BERT_BASE = Inventory(layers=12, heads=12, head_size=64, hidden=768, ffn=3072,
                      encoder_params=85_054_464)


@dataclass(frozen=True)
class Work:
    """What one setting costs. ``fixed``: forward-pass equivalents set by the parameters;
    ``passes``: passes over the loaded data (each costs its number of examples); ``batch_tokens``:
    the largest gradient batch in tokens (memory); ``what``: the product that sets ``fixed``, for
    messages (e.g. ``"batches x batch_size = 128 examples, 3 passes each"``)."""

    fixed: float = 0.0
    passes: float = 0.0
    batch_tokens: int = 0
    what: str = ""
    # what one of ``passes`` takes on the fast path, as a share of a plain forward pass (masked
    # evaluations restart from a cached layer and run sliced, checked-bf16 matmuls); for time
    # estimates only (``prunelens analyze``): the budgets count every pass in full
    pass_share: float = 1.0
    # model calls (batches, gradient steps; a forward and backward = 3) set by the parameters:
    # each has a fixed cost beyond its examples (Python, hooks), which on a tiny model is most of
    # the time; for time estimates only. ``pass_rows``: the examples of one call of ``passes``
    calls: float = 0.0
    pass_rows: int = 64

    def total(self, n_examples: int) -> float:
        return float(self.fixed + self.passes * max(0, int(n_examples)))

    def expected_calls(self, n_examples: int) -> float:
        """Model calls this setting is expected to make (for time estimates)."""
        return float(self.calls + self.passes * math.ceil(max(0, int(n_examples)) / max(1, self.pass_rows)))

    def expected(self, n_examples: int) -> float:
        """Forward-pass equivalents this setting is expected to take (for time estimates)."""
        return float(self.fixed + self.passes * self.pass_share * max(0, int(n_examples)))


def check_work(work: Work, budget: float, who: str) -> None:
    """Refuse a setting whose parameter-driven work or gradient batch is over the budgets."""
    if work.fixed > budget:
        raise ParamError(f"{who}: {work.what or 'these parameters'} cost {work.fixed:,.0f} forward-pass "
                         f"equivalents, over the budget of {budget:,.0f} (lower them)")
    if work.batch_tokens > MAX_BATCH_TOKENS:
        raise ParamError(f"{who}: a batch of {work.batch_tokens:,} tokens is over the budget of "
                         f"{MAX_BATCH_TOKENS:,} tokens per gradient batch (lower batch_size or max_length)")


SEED = Param("seed", "int", 0, "random seed (every random choice takes it)", 0, 2**31 - 1)


def declared_param(declared: tuple[Param, ...], name: str, owner: str) -> Param:
    for p in declared:
        if p.name == name:
            return p
    raise ParamError(f"{owner} has no parameter '{name}' "
                     f"(it has: {', '.join(p.name for p in declared) or 'none'})")


def parse_declared(declared: tuple[Param, ...], raw: dict[str, Any] | None, owner: str) -> dict[str, Any]:
    """The one validation of declared parameters (methods and trainers): every declared name,
    the default filled in where ``raw`` has none, each value parsed; an unknown name refused."""
    raw = dict(raw or {})
    for name in raw:
        declared_param(declared, name, owner)
    return {p.name: p.parse(raw[p.name]) if p.name in raw else p.default for p in declared}


@dataclass(frozen=True)
class Deviation:
    """One point where prunelens's method differs from (or chooses between) the paper and its
    official code."""

    aspect: str
    paper: str  # what the paper (and, where it says so, the official code) does
    prunelens: str  # what prunelens does, and why

    def as_dict(self) -> dict:
        return {"aspect": self.aspect, "paper / official code": self.paper, "prunelens": self.prunelens}


@dataclass
class Method:
    """A pruning-importance method. Subclasses set the class attributes and ``compute``."""

    name: str = ""
    title: str = ""
    summary: str = ""
    units: tuple[str, ...] = ("head",)
    params: tuple[Param, ...] = ()
    # what a setting costs: (params, inventory, unit or None) -> Work; None = unknown, which
    # counts as expensive (a new method asks before computing until it says what it costs)
    cost: Callable[[dict, Inventory, str | None], Work] | None = None
    default_scope: str = "global"
    default_sparsity: float = 0.5
    paper: str = ""
    trainer: Any = None  # a Trainer (below) for methods with a training mode
    evaluates_masks: bool = False  # scores are masked evaluations (their precision is in the key)
    plain: str = ""  # one plain-language sentence for the dashboard (``summary`` is for the CLI)
    # what this implementation does differently from the paper and its official code, one
    # :class:`Deviation` each: the method page and docs/FIDELITY.md show the same list
    deviations: tuple[Deviation, ...] = ()
    # a measurement about units that is not an importance criterion (ADMM's surviving-norm share):
    # labelled as such and kept out of criterion rankings
    diagnostic: bool = False
    # the method's importance uses the task loss, so the model must classify into >= 2 classes
    needs_classes: bool = False
    # one computation gives every unit's scores (``compute_units`` is overridden): asked for one
    # unit, the operations compute and store them all, so nothing is recomputed or memoized
    joint: bool = False
    # the scores read only the training split (:func:`prunelens.analysis.batches.training_data`),
    # never the loaded evaluation data: True, or a predicate of the (validated) parameters. Where
    # the data names a train split, the store keys such scores by it (:meth:`Session.keys`), so
    # another ``--limit`` or evaluation subset finds them
    training_split: bool | Callable[[dict[str, Any]], bool] = False
    # seconds of work beside the encoder's, for time estimates only (``prunelens analyze``, the
    # pages): (params, inventory, measure) -> seconds here, where ``measure(name, timer)`` gives
    # a measurement kept per model/data pair (smp-pruner's CNN on one map), timed once
    side_seconds: Callable[[dict[str, Any], Inventory, Callable], float] | None = None

    def param(self, name: str) -> Param:
        return declared_param(self.params, name, f"method '{self.name}'")

    def reads_training_split(self, params: dict[str, Any]) -> bool:
        """Whether scores with ``params`` are computed from the training split alone."""
        return bool(self.training_split(params) if callable(self.training_split) else self.training_split)

    def validate(self, raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """All declared parameters, defaults filled in, values checked; unknown names refused;
        a setting over the work budgets (judged on BERT-base) refused."""
        values = parse_declared(self.params, raw, f"method '{self.name}'")
        if self.cost is not None:
            check_work(self.cost(values, BERT_BASE, None), MAX_SCORE_WORK, f"method '{self.name}'")
        return values

    def work(self, params: dict[str, Any] | None, inventory: Inventory | None = None,
             n_examples: int = SMALL_DATA, unit: str | None = None) -> float:
        """Forward-pass equivalents of scoring with ``params`` (validated) on a model with
        ``inventory`` (default BERT-base) and ``n_examples`` evaluation examples; ``unit`` None:
        the costliest unit. Unknown cost: infinite."""
        if self.cost is None:
            return math.inf
        values = self.validate(params)
        return self.cost(values, inventory or BERT_BASE, unit).total(n_examples)

    def is_expensive(self, params: dict[str, Any] | None, inventory: Inventory | None = None,
                     n_examples: int = SMALL_DATA, unit: str | None = None) -> bool:
        """Whether this setting needs an explicit click in the dashboard (work over
        :data:`EXPENSIVE_WORK`): derived from the work, never set by hand."""
        return self.work(params, inventory, n_examples, unit) > EXPENSIVE_WORK

    @property
    def expensive(self) -> bool:
        """The listing's label: expensive at the default parameters even on a small evaluation
        set (:data:`SMALL_DATA` examples, BERT-base). Pages decide per setting and per loaded
        model and data with :meth:`is_expensive`."""
        return self.is_expensive(None)

    def check_unit(self, unit: str) -> str:
        if unit not in self.units:
            raise ParamError(f"method '{self.name}' scores units {', '.join(self.units)}, not '{unit}'")
        return unit

    def is_compatible(self, loaded: LoadedModel, data: TextData | None = None,
                      objective: str = "labels") -> str | None:
        """Why this method cannot score ``loaded`` on ``data`` under ``objective`` (a phrase for
        the UI), or None. A method that needs a loss uses the objective's
        (:func:`prunelens.analysis.objectives.gradient_losses`), so a headless encoder under the
        embedding objective has no classes to need."""
        if getattr(loaded, "headless", False):
            return None
        classes = int(getattr(loaded.model.config, "num_labels", 2) or 0)
        if self.needs_classes and classes < 2:
            return (f"its importance is the gradient or change of the classification loss, and this model "
                    f"has {classes} output{'s' if classes != 1 else ''} (a regression head has no classes)")
        return None

    def score(self, ctx: Session, unit: str, params: dict[str, Any] | None = None) -> np.ndarray:
        """Validated entry point: scores shaped like the unit inventory, higher = more important."""
        return self.score_units(ctx, (unit,), params)[unit]

    def score_units(self, ctx: Session, units, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Scores of several units for one setting (validated, shapes checked), by unit."""
        units = tuple(self.check_unit(u) for u in units)
        params = self.validate(params)
        reason = self.is_compatible(ctx.loaded, ctx.data, ctx.objective)
        if reason:
            raise ParamError(f"method '{self.name}' cannot score this model and data: {reason}")
        out = {}
        for unit, scores in self.compute_units(ctx, units, params).items():
            scores = np.asarray(scores, dtype=np.float64)
            expected = ctx.loaded.inventory.unit_shape(unit)
            if scores.shape != expected:
                raise AssertionError(f"{self.name} returned shape {scores.shape} for {unit}, expected {expected}")
            out[unit] = scores
        return out

    def joint_units(self, params: dict[str, Any], unit: str) -> tuple[str, ...]:
        """The units one computation of ``unit`` gives at no extra pass (``joint`` methods: all
        of them, ``unit`` first); the operations compute and store these together."""
        return (unit, *(u for u in self.units if u != unit)) if self.joint else (unit,)

    def compute_units(self, ctx: Session, units: tuple[str, ...], params: dict[str, Any]) -> dict[str, np.ndarray]:
        """Scores of ``units`` (validated parameters): one :meth:`compute` each, unless the method
        computes them together (``joint``)."""
        return {unit: self.compute(ctx, unit, params) for unit in units}

    def compute(self, ctx: Session, unit: str, params: dict[str, Any]) -> np.ndarray:
        if self.joint:
            return self.compute_units(ctx, (unit,), params)[unit]
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "units": list(self.units),
                "params": [p.describe() for p in self.params], "expensive": self.expensive,
                "trains": self.trainer is not None,
                "deviations": [d.as_dict() for d in self.deviations], "diagnostic": self.diagnostic,
                "training_params": self.trainer.describe()["params"] if self.trainer else [], "default_scope": self.default_scope, "paper": self.paper}


# rough CPU costs per example and per million encoder parameters (MiniLM-L6 on a busy 2-core
# machine: a training step of 16 examples ~2-12 s, a forward pass over 64 examples ~1.5 s)
TRAIN_SECONDS_PER_EXAMPLE_MPARAM = 0.012
EVAL_SECONDS_PER_EXAMPLE_MPARAM = 0.002


def training_seconds(loaded: LoadedModel, train_examples: int, eval_examples: int) -> float:
    """A rough run-time estimate (seconds on 2 CPU cores) of a training run that makes
    ``train_examples`` forward+backward passes and ``eval_examples`` forward passes."""
    mparams = sum(p.numel() for layer in loaded.layers() for p in layer.parameters()) / 1e6
    return mparams * (train_examples * TRAIN_SECONDS_PER_EXAMPLE_MPARAM
                      + eval_examples * EVAL_SECONDS_PER_EXAMPLE_MPARAM)


def steps_workload(params: dict, n_eval: int) -> tuple[int, int] | None:
    """(trained examples, evaluated examples) of a plain run: steps x batch size, two evaluations."""
    if "steps" in params and "batch_size" in params:
        return int(params["steps"]) * int(params["batch_size"]), 2 * n_eval
    return None


@dataclass(frozen=True)
class Trainer:
    params: tuple[Param, ...]
    run: Callable[..., dict]
    summary: str = ""
    cost: Callable[[dict], Work] | None = None  # what a run with these parameters costs
    # (params, evaluation examples) -> (trained examples, evaluated examples): the run-time model
    workload: Callable[[dict, int], tuple[int, int] | None] = steps_workload
    # the run fine-tunes (or evaluates its variants) against the gold labels: it needs the
    # labels objective (every training mode so far does)
    needs_labels: bool = True

    def is_compatible(self, objective: str = "labels") -> str | None:
        """Why a run cannot happen under ``objective`` (a phrase for the UI and the CLI), or None."""
        if self.needs_labels and objective != "labels":
            return (f"its training steps fine-tune on the gold labels, and the objective is {objective} "
                    "(use labelled data and --objective labels)")
        return None

    def validate(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        """As :meth:`Method.validate`, against the training budget."""
        values = parse_declared(self.params, raw, "training")
        if self.cost is not None:
            check_work(self.cost(values), MAX_TRAIN_WORK, "training run")
        return values

    def estimate(self, loaded: LoadedModel, params: dict[str, Any] | None, eval_examples: int) -> dict | None:
        """``{"seconds", "train_examples", "eval_examples"}`` of a run on ``loaded`` (None: unknown)."""
        counts = self.workload(self.validate(params), eval_examples)
        if counts is None:
            return None
        train, evals = counts
        return {"seconds": training_seconds(loaded, train, evals), "train_examples": train,
                "eval_examples": evals}

    def work(self, params: dict[str, Any] | None) -> float:
        """Forward-pass equivalents of the training steps of a run (evaluations not counted)."""
        values = self.validate(params)
        return self.cost(values).fixed if self.cost is not None else float("inf")

    def describe(self) -> dict:
        return {"summary": self.summary, "params": [p.describe() for p in self.params]}


def training_work(steps: int, batch_size: int, max_length: int, passes: float = 3.0,
                  what: str = "steps x batch_size") -> Work:
    """The work of ``steps`` gradient steps of ``batch_size`` examples (``passes`` forward-pass
    equivalents each: forward + backward = 3)."""
    examples = int(steps) * int(batch_size)
    return Work(fixed=passes * examples, batch_tokens=int(batch_size) * int(max_length),
                what=f"{what} = {examples:,} examples x {passes:g} passes", calls=passes * int(steps))
