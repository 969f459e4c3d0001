"""``prunelens precompute``: fill a store with everything the dashboard shows for one model/data.

For the embedded default this is what ships in ``cached_results/``: every method's scores for
every unit it declares (default parameters), 0-90% head curves for all methods, and one training
run per training method with its default budget.
"""

from __future__ import annotations

import time
from pathlib import Path

from analysis.cache import ResultStore, write_manifest
from analysis.methods import all_methods
from analysis.methods.base import Progress, no_progress
from analysis.operations import Session, compute_scores, curve

# the Prune slider's grid (0 to 0.95 in steps of 0.05): on the default every slider position is stored
CURVE_SPARSITIES = [round(0.05 * i, 2) for i in range(20)]
BLOCK_SPARSITIES = [0.0, 0.5]  # what docs/FIDELITY.md reads for attention and FFN blocks
# training runs beyond each method's defaults (docs/FIDELITY.md reads PINS at 80% and 90%)
EXTRA_TRAINING = {"pins": [{"target_sparsity": 0.9}, {"signed": True}]}


def precompute(session: Session, out_dir: Path | None = None, methods: list[str] | None = None,
               include_training: bool = True, progress: Progress = no_progress) -> dict:
    if out_dir is not None:
        # a shippable folder: what its manifest lists is reused, new entries are added to it
        session.store = ResultStore(user_dir=out_dir, shipped_dir=out_dir)
    registry = all_methods()
    names = methods or list(registry)
    summary: dict = {"scores": {}, "curves": [], "training": {}, "seconds": {}}
    jobs = [(n, u) for n in names for u in registry[n].units]
    for i, (name, unit) in enumerate(jobs):
        t0 = time.perf_counter()
        progress(i / len(jobs), f"{name} {unit}")
        compute_scores(session, name, unit)
        summary["scores"].setdefault(name, []).append(unit)
        summary["seconds"][f"{name}/{unit}"] = round(time.perf_counter() - t0, 2)
    head_methods = [n for n in names if "head" in registry[n].units]
    for scope in ("global", "layer"):
        t0 = time.perf_counter()
        curve(session, head_methods, CURVE_SPARSITIES, "head", scope,
              progress=lambda f, m, scope=scope: progress(f, f"curve ({scope}): {m}"))
        summary["curves"].append(scope)
        summary["seconds"][f"curve/{scope}"] = round(time.perf_counter() - t0, 2)
    for unit in ("attention", "ffn"):
        block_methods = [n for n in names if unit in registry[n].units]
        curve(session, block_methods, BLOCK_SPARSITIES, unit, "global",
              progress=lambda f, m, unit=unit: progress(f, f"{unit} curve: {m}"))
        summary["curves"].append(unit)
    if include_training:
        from analysis.training import train_command, trainable_methods

        for name in trainable_methods():
            if name not in names:
                continue
            for params in [None, *EXTRA_TRAINING.get(name, [])]:
                t0 = time.perf_counter()
                label = name + ("" if params is None else str(params))
                run = train_command(session, name, params,
                                    progress=lambda f, m, label=label: progress(f, f"train {label}: {m}"))
                summary["training"][label] = {"cached": run.get("cached", False)}
                summary["seconds"][f"train/{label}"] = round(time.perf_counter() - t0, 2)
    if out_dir is not None:  # a folder to ship: its entries are listed and hashed in a manifest
        summary["manifest_entries"] = write_manifest(out_dir)
    return summary
