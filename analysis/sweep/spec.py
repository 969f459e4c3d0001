"""Sweep specs: a TOML file that names a grid of analyses, read and checked before anything loads.

A spec lists models, data sets, methods with parameter grids, units, scopes, sparsities and
training runs (``docs/SWEEPS.md`` documents every field; ``examples/sweep-small.toml`` is one).
:func:`load_spec` turns it into a :class:`SweepSpec` whose every method name, unit, scope,
sparsity and parameter value has been validated by the same declarations the CLI uses, so a typo
is one ``error:`` line before any model or data set is opened. A list in ``params`` is a grid
axis: the spec expands into the Cartesian product of its axes.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelens.analysis.errors import ParamError, path_error, shown, usable_path
from prunelens.analysis.files import read_regular
from prunelens.analysis.objectives import OBJECTIVES
from prunelens.analysis.methods import get_method
from prunelens.analysis.methods.base import UNITS
from prunelens.analysis.pruning import check_sparsity

MAX_SPEC_BYTES = 1 << 20  # a sweep spec is a few hundred bytes
TOP_KEYS = {"models", "data", "limit", "objective", "units", "scopes", "sparsities", "methods", "train"}
METHOD_KEYS = {"params", "units", "scopes", "sparsities"}
TRAIN_KEYS = {"method", "params"}
SCOPES = ("global", "layer")
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".txt")
DEFAULTS = {"models": ["default"], "data": ["default"], "units": ["head"], "scopes": ["global"],
            "sparsities": []}


@dataclass(frozen=True)
class Target:
    """One model evaluated on one data set (the first ``limit`` examples when given) under an
    objective (None: the model's and data's default, :mod:`prunelens.analysis.objectives`)."""

    model: str
    data: str
    limit: int | None = None
    objective: str | None = None

    def label(self) -> str:
        limit = "" if self.limit is None else f"[:{self.limit}]"
        objective = "" if self.objective is None else f" ({self.objective})"
        return f"{Path(self.model).name or self.model} on {Path(self.data).name or self.data}{limit}{objective}"


@dataclass(frozen=True)
class MethodGrid:
    """A method's parameter combinations (each validated, defaults filled in) and where it runs."""

    method: str
    params: tuple[dict, ...]
    units: tuple[str, ...]
    scopes: tuple[str, ...]
    sparsities: tuple[float, ...]


@dataclass(frozen=True)
class TrainGrid:
    """A training mode's parameter combinations (each validated, defaults filled in)."""

    method: str
    params: tuple[dict, ...]


@dataclass(frozen=True)
class SweepSpec:
    path: str
    targets: tuple[Target, ...]
    methods: tuple[MethodGrid, ...] = ()
    training: tuple[TrainGrid, ...] = ()
    views: tuple[str, ...] = ()  # pages whose own stored answers the sweep fills (analyze: spectral)
    raw: dict = field(default_factory=dict, repr=False, compare=False)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a TOML sweep spec; relative model and data paths are taken from its folder."""
    path = usable_path(str(path), "sweep spec", ParamError)
    try:  # a regular file within the cap: a FIFO never blocks
        text = read_regular(path, MAX_SPEC_BYTES, f"sweep spec {shown(str(path))}", ParamError).decode("utf-8")
    except FileNotFoundError:
        raise ParamError(f"sweep spec not found: {path} (give the path of a .toml file)") from None
    except UnicodeDecodeError:
        raise ParamError(f"cannot read sweep spec {path}: it is not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParamError(f"sweep spec {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ParamError(f"sweep spec {path} is nested too deeply to be read (a spec has a few levels)") from None
    return parse_spec(raw, base=path.resolve().parent, name=str(path))


def parse_spec(raw: dict, base: Path | None = None, name: str = "sweep spec") -> SweepSpec:
    """Check a parsed spec (a dict as TOML gives it) and expand its parameter grids."""
    where = f"{name}:"
    _refuse_unknown(raw, TOP_KEYS, where)
    top = {k: raw.get(k, v) for k, v in DEFAULTS.items()}
    models = [_resolve(m, base, "model") for m in _strings(top["models"], f"{where} models")]
    data = [_resolve(d, base, "data") for d in _strings(top["data"], f"{where} data")]
    limit = raw.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ParamError(f"{where} limit must be a positive integer, got {limit!r}")
    objective = raw.get("objective")
    if objective is not None and objective not in OBJECTIVES:
        raise ParamError(f"{where} objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    targets = tuple(Target(m, d, limit, objective) for m in models for d in data)

    methods_raw = raw.get("methods", {})
    if isinstance(methods_raw, list):  # methods = ["magnitude", "random"]: default parameters
        methods_raw = {name: {} for name in _strings(methods_raw, f"{where} methods")}
    if not isinstance(methods_raw, dict):
        raise ParamError(f"{where} methods must be a list of names or [methods.<name>] tables")
    grids = tuple(_method_grid(n, t, top, f"{where} methods.{n}:") for n, t in methods_raw.items())

    train_raw = raw.get("train", [])
    if not isinstance(train_raw, list):
        raise ParamError(f"{where} train must be [[train]] tables (method = ..., params = {{...}})")
    training = tuple(_train_grid(t, f"{where} train[{i}]:") for i, t in enumerate(train_raw))
    if not grids and not training:
        raise ParamError(f"{where} names no methods and no training runs (add [methods.<name>] or [[train]])")
    return SweepSpec(name, targets, grids, training, raw=raw)


def _method_grid(name: str, table: Any, top: dict, where: str) -> MethodGrid:
    if not isinstance(table, dict):
        raise ParamError(f"{where} must be a table (params = {{...}}, units = [...])")
    _refuse_unknown(table, METHOD_KEYS, where)
    method = get_method(name)
    params = tuple(_validated(method.validate, combo, where) for combo in _grid(table.get("params", {}), where))
    units = _strings(table.get("units", top["units"]), f"{where} units")
    for unit in units:
        if unit not in UNITS:
            raise ParamError(f"{where} unit '{unit}' is not one of {', '.join(UNITS)}")
    if "units" in table:
        for unit in units:
            method.check_unit(unit)
    else:  # the spec-wide units: each method scores those it declares
        units = [u for u in units if u in method.units]
        if not units:
            raise ParamError(f"method '{name}' scores none of the units {', '.join(top['units'])} "
                             f"(it scores {', '.join(method.units)}; give {where.rstrip(':')} units)")
    scopes = _strings(table.get("scopes", top["scopes"]), f"{where} scopes")
    for scope in scopes:
        if scope not in SCOPES:
            raise ParamError(f"{where} scope '{scope}' is not one of {', '.join(SCOPES)}")
    sparsities = table.get("sparsities", top["sparsities"])
    if not isinstance(sparsities, list):
        raise ParamError(f"{where} sparsities must be a list of numbers in [0, 1)")
    checked = []
    for s in sparsities:
        if isinstance(s, bool) or not isinstance(s, int | float):
            raise ParamError(f"{where} sparsities must be numbers in [0, 1), got {s!r}")
        checked.append(_validated(check_sparsity, s, where))
    return MethodGrid(name, params, tuple(dict.fromkeys(units)), tuple(dict.fromkeys(scopes)),
                      tuple(dict.fromkeys(checked)))


def _train_grid(table: Any, where: str) -> TrainGrid:
    from prunelens.analysis.training import get_trainer

    if not isinstance(table, dict) or "method" not in table:
        raise ParamError(f"{where} must be a table with method = \"<name>\"")
    _refuse_unknown(table, TRAIN_KEYS, where)
    name = table["method"]
    if not isinstance(name, str):
        raise ParamError(f"{where} method must be a name, got {name!r}")
    trainer = get_trainer(name)
    params = tuple(_validated(trainer.validate, combo, f"{where[:-1]} ({name}):")
                   for combo in _grid(table.get("params", {}), where))
    return TrainGrid(name, params)


def _grid(params: Any, where: str) -> list[dict]:
    """The Cartesian product of the list-valued entries of ``params`` (scalars are fixed)."""
    if not isinstance(params, dict):
        raise ParamError(f"{where} params must be a table, e.g. params = {{ seed = [0, 1] }}")
    axes = []
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ParamError(f"{where} params.{name} is an empty list (give at least one value)")
        axes.append([(name, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def _validated(validate, combo: dict, where: str) -> dict:
    try:
        return validate(combo)
    except ParamError as exc:
        raise ParamError(f"{where} {exc}") from None


def _strings(value: Any, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ParamError(f"{where} must be a non-empty list of names, got {value!r}")
    return [v.strip() for v in values]


def _refuse_unknown(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ParamError(f"{where} unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _resolve(spec: str, base: Path | None, what: str) -> str:
    """A path that exists (beside the spec first, then in the working folder) becomes absolute,
    because workers run in other folders; names such as ``default``, ``glue:sst2`` or a hub id
    stay as they are. A spec that can only be a path and is missing is refused now."""
    if spec == "default" or spec.startswith("glue:"):
        return spec
    path = usable_path(spec, f"{what}", ParamError)  # ~nouser, a name too long: one line
    for candidate in ([base / path] if base is not None and not path.is_absolute() else []) + [path]:
        try:
            if candidate.exists():
                return str(candidate.resolve())
        except (OSError, RuntimeError, ValueError) as exc:  # too long once joined, a symlink loop
            raise path_error(ParamError, what, spec, exc) from None
    if spec.startswith((".", "/", "~")) or path.suffix.lower() in DATA_SUFFIXES:
        raise ParamError(f"{what} '{spec}' not found (paths are read relative to the spec's folder)")
    return spec
