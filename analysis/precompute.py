"""``prunelens precompute``: :mod:`prunelens.analysis.analyze`'s job with every training mode, optionally into
a shippable folder (its entries listed and hashed in a manifest).

For the embedded default this is what ships in ``cached_results/``: every method's scores for
every unit it declares (default parameters), the Prune slider's head curves (global and per-layer
scope) for all methods, attention/FFN blocks at 0 and 50%, and one training run per training
method with its default budget (plus :data:`prunelens.analysis.analyze.EXTRA_TRAINING`).

For ``default-embedding`` (the un-fine-tuned sentence encoder, embedding objective) what ships is
:data:`EMBEDDING_SHIPPED` (``prunelens precompute --model default-embedding --skip-training
--head-scopes global --curve-step 0.1 --out cached_results``): every method's scores, head curves
in the global scope at the Compare page's 10% steps, blocks, the Spectral page; no training mode
(none runs without labels). Other slider positions and the per-layer scope are computed when asked
(the first estimate answers within a second).
"""

from __future__ import annotations

from pathlib import Path

from prunelens.analysis.analyze import run_analysis
from prunelens.analysis.cache import ResultStore, write_manifest
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.spec import Target


# what ships for default-embedding (see the module docstring): precompute's arguments
EMBEDDING_SHIPPED = {"include_training": False, "head_scopes": ("global",),
                     "curve_sparsities": tuple(round(0.1 * i, 1) for i in range(10))}


def precompute(session: Session, target: Target, out_dir: Path | None = None,
               methods: list[str] | None = None, include_training: bool = True,
               progress: bool = True, head_scopes: tuple[str, ...] | None = None,
               curve_sparsities: tuple[float, ...] | None = None) -> dict:
    if out_dir is not None:
        # a shippable folder: what its manifest lists is reused, new entries are added to it
        session.store = ResultStore(user_dir=out_dir, shipped_dir=out_dir)
    done = run_analysis(session, target, methods, training=include_training, progress=progress,
                        extra_training=include_training, head_scopes=head_scopes,
                        curve_sparsities=curve_sparsities)
    summary = done.as_json()
    if out_dir is not None:  # a folder to ship: its entries are listed and hashed in a manifest
        summary["manifest_entries"] = write_manifest(out_dir)
    return summary
