"""Sweep tasks: one task = one store entry, and the expansion of a spec into them.

Four kinds, each computed by the same operation the CLI and the dashboard use, so a sweep fills
exactly the entries they read:

- ``scores``: a method's scores of one unit for one parameter combination
  (:func:`prunelens.analysis.operations.compute_scores`);
- ``mask-eval``: one keep-mask's evaluation (:func:`prunelens.analysis.operations.evaluate_mask`). Masks come
  from scores, so these are expanded once their scores are known; two methods that land on the
  same mask (every method at sparsity 0) share one task, as they share one entry;
- ``train-run``: one training run (:func:`prunelens.analysis.training.train_command`);
- ``view``: one of a page's own stored answers (the Spectral page's σ_max table, activation
  histograms, normalized-model evaluation: :func:`prunelens.analysis.spectral_store.compute`).

A task carries every key its result may be stored under (exact fp32 first, then checked bf16
where the evaluator may use it), computed by the operations' own key functions; a task is done
when any of them is in the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from prunelens.analysis.cache import Key, canonical
from prunelens.analysis.cache import mask_params
from prunelens.analysis.operations import mask_for, mask_keys, score_keys
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.spec import MethodGrid, SweepSpec, Target, TrainGrid

KINDS = ("train-run", "scores", "mask-eval", "view")  # also the order in which ready tasks are started


@dataclass(frozen=True)
class Task:
    kind: str  # one of KINDS
    target: Target
    method: str  # mask-eval: the (first) method whose scores chose the mask; view: the page
    unit: str = ""
    params: str = "{}"  # canonical JSON of the validated parameters (view: the part and its own)
    mask: str = ""  # mask-eval: the keep-mask as "0"/"1" characters, row-major
    shape: tuple[int, ...] = ()
    keys: tuple[Key, ...] = ()
    label: str = ""

    @property
    def digest(self) -> str:
        """The task's identity: the digest of its exact (first) key."""
        return self.keys[0].digest

    def param_dict(self) -> dict:
        return json.loads(self.params)

    def mask_array(self) -> np.ndarray:
        return np.array([c == "1" for c in self.mask], dtype=np.int8).reshape(self.shape)


@dataclass(frozen=True)
class Followers:
    """The mask evaluations a ``scores`` task unlocks: one per scope × sparsity."""

    scopes: tuple[str, ...]
    sparsities: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.scopes) * len(self.sparsities)


def is_stored(session: Session, task: Task) -> bool:
    return any(session.store.get(key) is not None for key in task.keys)


def score_tasks(session: Session, target: Target, grid: MethodGrid) -> list[tuple[Task, Followers]]:
    """One task per unit × parameter combination of a method grid, with what it unlocks."""
    from prunelens.analysis.methods import get_method

    method = get_method(grid.method)
    out = []
    for unit in grid.units:
        for params in grid.params:
            keys = score_keys(session, method, unit, params)
            task = Task("scores", target, method.name, unit, canonical(params),
                        keys=tuple(keys.values()), label=f"{method.name} {unit}{_brief(params, method)}")
            out.append((task, Followers(grid.scopes, grid.sparsities)))
    return out


def train_tasks(session: Session, target: Target, grid: TrainGrid) -> list[Task]:
    from prunelens.analysis.training import get_trainer, run_key

    defaults = {p.name: p.default for p in get_trainer(grid.method).params}
    return [Task("train-run", target, grid.method, params=canonical(params),
                 keys=(run_key(session, grid.method, params),),
                 label=f"train {grid.method}{_changed(params, defaults)}")
            for params in grid.params]


def view_tasks(session: Session, target: Target, page: str) -> list[Task]:
    """The stored answers of one page (only ``spectral`` has any) at the positions analyze fills."""
    from prunelens.analysis import spectral_store

    if page != "spectral":
        raise ValueError(f"no stored views for page {page!r}")
    return [Task("view", target, page, params=canonical({"part": part, **params}),
                 keys=(spectral_store.key(session, part, params),),
                 label=spectral_store.label(part, params))
            for part, params in spectral_store.ANALYZED]


def mask_tasks(session: Session, source: Task, scores: np.ndarray, followers: Followers) -> list[Task]:
    """The mask evaluations of one scored method (duplicates within it removed)."""
    seen: dict[str, Task] = {}
    for scope in followers.scopes:
        for sparsity in followers.sparsities:
            mask = mask_for(scores, sparsity, scope)
            keys = mask_keys(session, source.unit, mask)
            task = Task("mask-eval", source.target, source.method, source.unit,
                        mask=mask_params(mask)["mask"], shape=tuple(mask.shape),
                        keys=tuple(keys.values()),
                        label=f"{source.label} {scope} {sparsity:.0%}")
            seen.setdefault(task.digest, task)
    return list(seen.values())


def expand(spec: SweepSpec, sessions: dict[Target, Session]) -> tuple[list[Task], dict[str, Followers]]:
    """Every training run, page view and score task of a spec (mask evaluations follow their scores)."""
    tasks: list[Task] = []
    followers: dict[str, Followers] = {}
    for target in spec.targets:
        session = sessions[target]
        for train in spec.training:
            tasks.extend(train_tasks(session, target, train))
        for page in spec.views:
            tasks.extend(view_tasks(session, target, page))
        for grid in spec.methods:
            for task, after in score_tasks(session, target, grid):
                tasks.append(task)
                followers[task.digest] = after
    unique = {t.digest: t for t in tasks}  # the same entry named twice in a spec runs once
    return list(unique.values()), followers


def _brief(params: dict, method) -> str:
    return _changed(params, {p.name: p.default for p in method.params})


def _changed(params: dict, defaults: dict) -> str:
    changed = [f"{k}={v}" for k, v in params.items() if defaults.get(k) != v]
    return f" ({', '.join(changed)})" if changed else ""
