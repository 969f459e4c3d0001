"""``admm-quant``: the ADMM loop of :mod:`prunelens.analysis.methods.admm` with the Z-step projecting onto
a per-output-channel symmetric k-bit grid instead of an N:M pattern (Wang, arXiv 2407.08334).

Live scores: per unit, ``1 − ||W − Q(W)||² / ||W||²`` for plain k-bit rounding Q (the share of
the unit's squared weight norm left intact). Training mode: ADMM + grid projection + a
straight-through fine-tune, compared with plain rounding of the dense model.
"""

from __future__ import annotations

from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.admm import (
    TRAIN_PARAMS,
    Admm,
    Projection,
    kbit_projection,
    run_admm,
    score_cost,
    train_cost,
    train_workload,
)
from prunelens.analysis.methods.base import Param, Trainer, no_progress
from prunelens.analysis.session import Session

QUANT_PARAMS = (Param("bits", "int", 4, "bits per weight (per-output-channel symmetric grid)", 2, 16),)


class AdmmQuant(Admm):
    def projection(self, params: dict) -> Projection:
        return kbit_projection(params["bits"])


def _run_quant(session: Session, params, progress=no_progress) -> dict:
    return run_admm(session, params, progress, kbit_projection(params["bits"]))


METHOD = AdmmQuant(
    name="admm-quant",
    title="ADMM k-bit quantization",
    plain="Round every weight to a few levels (k bits); a unit scores high when rounding leaves its weights nearly intact.",
    summary="Share of each unit's squared weight norm left intact by plain per-channel k-bit "
            "rounding; training mode runs ADMM with a k-bit Z-step and a straight-through fine-tune.",
    units=UNITS,
    params=QUANT_PARAMS,
    cost=score_cost,
    paper="Wang, ADMM based semi-structured pattern pruning for transformers (arXiv 2407.08334)",
    trainer=Trainer(params=QUANT_PARAMS + TRAIN_PARAMS, run=_run_quant, cost=train_cost, workload=train_workload,
                    summary="ADMM with the Z-step on a k-bit grid, then grid projection and a "
                            "straight-through fine-tune; compares dense, plain rounding and ADMM."),
    diagnostic=True,  # a share of surviving weight norm, not an importance criterion
)
