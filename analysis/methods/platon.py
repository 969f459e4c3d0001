"""``platon``: PLATON (Zhang et al., ICML 2022, arXiv 2206.12562), beside PINS.

PLATON's step score is the first-order sensitivity |θ·g|; it is smoothed exactly as PINS smooths
|S| (:class:`prunelens.analysis.methods.pins.PinsState`: Ī = EMA(score), U = EMA(|score − Ī|), importance
Ī·U ≥ 0, the official one-window lag and ``delta_t`` window). PINS's S = −θ·g + η·g² differs only
by the η·g² term, so PLATON is PINS with η = 0; the two side by side show how much that term
changes a ranking (on the default model it is about 5e-6 of |θ·g|: the rankings agree almost
exactly). Same scored weights, units, data (the training split) and training mode (iterative
weight pruning with the cubic schedule, no self-regularization) as ``pins``.

Deviations from the official code (QingruZhang/PLATON), also in docs/FIDELITY.md: the schedule
and masking are prunelens's (shared with ``pins``); β2 = 2 (a running variance) is not offered;
embeddings are frozen in training mode.
"""

from __future__ import annotations

from functools import partial

from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.base import SEED, Deviation, Param, Trainer
from prunelens.analysis.methods.pins import (SCHEDULE, SCHEDULE_ENDS, SCORE_BATCHES, Pins, score_cost, train_cost,
                                   train_run, train_workload)

SMOOTHING = (
    Param("beta1", "float", 0.85, "EMA factor of the sensitivity Ī", 0.0, 0.9999),
    Param("beta2", "float", 0.95, "EMA factor of the uncertainty U (PLATON's default 0.95)", 0.0, 0.9999),
    Param("delta_t", "int", 1, "window of steps whose mean |θ·g| enters the EMA at once (deltaT)", 1, 64),
)


def _trainer():
    return Trainer(
        params=(
            *SCHEDULE,
            *SMOOTHING,
            Param("prune_every", "int", 10, "steps between pruning steps", 1, 10000),
            *SCHEDULE_ENDS,
            Param("baseline", "choice", "gradual", "magnitude baseline at the same weight sparsity: "
                  "gradual (same schedule and budget), oneshot (no training) or none",
                  choices=("gradual", "oneshot", "none")),
            Param("max_length", "int", 128, "tokens per training example", 8, 512),
            SEED,
        ),
        run=partial(train_run, criterion="platon"),
        cost=train_cost,
        workload=train_workload,
        summary="Iterative weight pruning of Q/K/V/O/FFN matrices by smoothed |θ·g| (PLATON) with a "
                "cubic schedule, against gradual magnitude pruning at the same budget.",
    )


METHOD = Pins(
    needs_classes=True,
    joint=True,
    name="platon",
    title="PLATON sensitivity × uncertainty",
    plain="Like PINS without its step-size term: how much the loss depends on each weight, smoothed "
          "over batches together with how much that estimate varies, added up per unit.",
    summary="|θ·g| per weight, smoothed (Ī·U ≥ 0), summed to heads, neurons and blocks; PINS "
            "with η = 0. Training mode prunes iteratively.",
    units=UNITS,
    params=(
        *SCORE_BATCHES,
        *SMOOTHING,
        Param("normalize", "bool", True, "divide by the largest score (ranking unchanged)"),
        SEED,
    ),
    cost=score_cost,
    default_scope="global",
    default_sparsity=0.5,
    paper="Zhang et al., ICML 2022 (arXiv 2206.12562)",
    trainer=_trainer(),
    eta_param=False,
    deviations=(
        Deviation("step score", "|θ·g| (QingruZhang/PLATON)", "the same"),
        Deviation("smoothing", "Ī = EMA(|θ·g|), U = EMA(| |θ·g| − Ī |), window deltaT, β2 = 2 a running variance",
                  "the same update (shared with pins); β2 = 2 not offered"),
        Deviation("schedule", "cubic from the initial to the final warm-up, masks every deltaT steps",
                  "the same cubic shape with prunelens's warmup/final fractions and prune_every"),
        Deviation("budget", "BERT-base/DeBERTa on GLUE, GPU", "MiniLM-L6 on Rotten Tomatoes, 150 steps × 16 (CPU)"),
    ),
)
