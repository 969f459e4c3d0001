"""``prunelens precompute``: :mod:`prunelens.analysis.analyze`'s job with every training mode, optionally into
a shippable folder (its entries listed and hashed in a manifest).

For the embedded default this is what ships in ``cached_results/``: every method's scores for
every unit it declares (default parameters), the Prune slider's head curves (global and per-layer
scope) for all methods, attention/FFN blocks at 0 and 50%, and one training run per training
method with its default budget (plus :data:`prunelens.analysis.analyze.EXTRA_TRAINING`).
"""

from __future__ import annotations

from pathlib import Path

from prunelens.analysis.analyze import run_analysis
from prunelens.analysis.cache import ResultStore, write_manifest
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.spec import Target


def precompute(session: Session, target: Target, out_dir: Path | None = None,
               methods: list[str] | None = None, include_training: bool = True,
               progress: bool = True) -> dict:
    if out_dir is not None:
        # a shippable folder: what its manifest lists is reused, new entries are added to it
        session.store = ResultStore(user_dir=out_dir, shipped_dir=out_dir)
    done = run_analysis(session, target, methods, training=include_training, progress=progress,
                        extra_training=include_training)
    summary = done.as_json()
    if out_dir is not None:  # a folder to ship: its entries are listed and hashed in a manifest
        summary["manifest_entries"] = write_manifest(out_dir)
    return summary
