"""The shared method contract: parameter declarations, the scoring context, the Method base.

A method declares its parameters once (:class:`Param`: name, type, range, default, one-line
help); the CLI parses ``--param k=v`` and the dashboard builds its widgets from the same
declarations. ``Method.score`` returns scores where **higher means more important**, shaped
by ``Inventory.unit_shape(unit)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from analysis.data import TextData
from analysis.errors import ParamError
from analysis.models import LoadedModel

UNITS = ("head", "attention", "ffn", "neuron")
KINDS = ("int", "float", "bool", "choice")

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """Default progress sink: does nothing."""


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

    def parse(self, raw: Any) -> Any:
        """Validate and convert ``raw`` (a CLI string or a widget value)."""
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
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ParamError(f"{where} must be in [{self.low}, {self.high}], got {value}")
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


SEED = Param("seed", "int", 0, "random seed (every random choice takes it)", 0, 2**31 - 1)


@dataclass
class Context:
    """What a method may use: the loaded model, the data, the shared evaluator, progress."""

    loaded: LoadedModel
    data: TextData
    evaluator: Any = None  # analysis.evaluate.Evaluator, created on demand
    progress: Progress = no_progress
    device: str = "cpu"

    def get_evaluator(self):
        if self.evaluator is None:
            from analysis.evaluate import Evaluator

            self.evaluator = Evaluator(self.loaded, self.data, device=self.device)
        return self.evaluator


@dataclass
class Method:
    """A pruning-importance method. Subclasses set the class attributes and ``compute``."""

    name: str = ""
    title: str = ""
    summary: str = ""
    units: tuple[str, ...] = ("head",)
    params: tuple[Param, ...] = ()
    expensive: bool = False  # cached and shipped; the UI asks before computing
    default_scope: str = "global"
    default_sparsity: float = 0.5
    paper: str = ""
    trainer: Any = None  # analysis.training.Trainer for methods with a training mode
    evaluates_masks: bool = False  # scores are masked evaluations (their precision is in the key)
    plain: str = ""  # one plain-language sentence for the dashboard (``summary`` is for the CLI)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParamError(f"method '{self.name}' has no parameter '{name}' "
                         f"(it has: {', '.join(p.name for p in self.params) or 'none'})")

    def validate(self, raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """All declared parameters, defaults filled in, values checked; unknown names refused."""
        raw = dict(raw or {})
        for name in raw:
            self.param(name)
        return {p.name: p.parse(raw[p.name]) if p.name in raw else p.default for p in self.params}

    def check_unit(self, unit: str) -> str:
        if unit not in self.units:
            raise ParamError(f"method '{self.name}' scores units {', '.join(self.units)}, not '{unit}'")
        return unit

    def score(self, ctx: Context, unit: str, params: dict[str, Any] | None = None) -> np.ndarray:
        """Validated entry point: scores shaped like the unit inventory, higher = more important."""
        self.check_unit(unit)
        params = self.validate(params)
        scores = np.asarray(self.compute(ctx, unit, params), dtype=np.float64)
        expected = ctx.loaded.inventory.unit_shape(unit)
        if scores.shape != expected:
            raise AssertionError(f"{self.name} returned shape {scores.shape} for {unit}, expected {expected}")
        return scores

    def compute(self, ctx: Context, unit: str, params: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, "summary": self.summary, "units": list(self.units),
                "params": [p.describe() for p in self.params], "expensive": self.expensive,
                "trains": self.trainer is not None,
                "training_params": self.trainer.describe()["params"] if self.trainer else [], "default_scope": self.default_scope, "paper": self.paper}
