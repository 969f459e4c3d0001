"""``platon``: PLATON (Zhang et al., ICML 2022, arXiv 2206.12562), beside PINS.

PLATON's step score is the first-order sensitivity |θ·g|; it is smoothed exactly as PINS smooths
|S| (:class:`prunelens.analysis.methods.pins.PinsState`: Ī = EMA(score), U = EMA(|score − Ī|), importance
Ī·U ≥ 0, the official one-window lag and ``delta_t`` window). PINS's S = −θ·g + η·g² differs only
by the η·g² term, so PLATON is PINS with η = 0; the two side by side show how much that term
changes a ranking (on the default model it is about 5e-6 of |θ·g|: the rankings agree almost
exactly). Same scored weights, units, data (the training split) and training mode (iterative
weight pruning with the cubic schedule, no self-regularization) as ``pins``.

Training follows the official runs (QingruZhang/PLATON, ``GLUE/scripts``, ``mt_dnn/prune_model.py``)
by default (``pins.OFFICIAL_VALUES["platon"]``; each an option whose other value is 0.2's,
``pins.V02_VALUES["platon"]``): Adamax with decoupled weight decay 0.01 (not on biases and
LayerNorm) under a linear warm-up and decay (``optimizer=adamw``: AdamW, no decay;
``lr_schedule=constant``), gradient clipping at 1.0, the importance updated *after* the optimizer
step on the stepped weights (``importance_after_step``), deltaT = 10, biases in the pool.

Remaining deviations (also in docs/FIDELITY.md): the schedule and masking are prunelens's cubic
schedule (shared with ``pins``: warm-up/final fractions and ``prune_every``); torch's Adamax
(bias-corrected first moment) rather than mt-dnn's; β2 = 2 (a running variance) is not offered;
embeddings are frozen in training mode; the budget is 150 steps of 16 from the fine-tuned default.
"""

from __future__ import annotations

from functools import partial

from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.base import SEED, Deviation, Param, Trainer
from prunelens.analysis.methods.pins import (BETA1, LOSS_DEVIATION, OFFICIAL_TRAINING, SCHEDULE, SCHEDULE_ENDS, SCORE_BATCHES, Pins, score_cost, train_cost,
                                   train_run, train_workload)

SMOOTHING = (
    BETA1,
    Param("beta2", "float", 0.95, "EMA factor of the uncertainty U (PLATON's default 0.95)", 0.0, 0.9999),
)


def _trainer():
    return Trainer(
        params=(
            *SCHEDULE,
            *SMOOTHING,
            Param("delta_t", "int", 10, "window of steps whose mean |θ·g| enters the EMA at once "
                  "(official deltaT: 10 in every official script; 0.2: 1)", 1, 64),
            Param("prune_every", "int", 10, "steps between pruning steps", 1, 10000),
            *SCHEDULE_ENDS,
            Param("optimizer", "choice", "adamax", "adamax = Adamax with decoupled weight decay 0.01 "
                  "(the official runs); adamw = AdamW without decay (0.2)", choices=("adamw", "adamax")),
            Param("importance_after_step", "bool", True, "update the importance after the optimizer "
                  "step, on the stepped weights (the official order); off: before it (0.2, PINS's order)"),
            *OFFICIAL_TRAINING,
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
    training_split=True,  # scores from the training split alone (the store keys them by it)
    title="PLATON sensitivity × uncertainty",
    plain="Like PINS without its step-size term: how much the loss depends on each weight, smoothed "
          "over batches together with how much that estimate varies, added up per unit.",
    summary="|θ·g| per weight, smoothed (Ī·U ≥ 0), summed to heads, neurons and blocks; PINS "
            "with η = 0. Training mode prunes iteratively.",
    units=UNITS,
    params=(
        *SCORE_BATCHES,
        *SMOOTHING,
        Param("delta_t", "int", 1, "window of batches whose mean |θ·g| enters the EMA at once (deltaT)", 1, 64),
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
        Deviation("smoothing", "Ī = EMA(|θ·g|), U = EMA(| |θ·g| − Ī |), window deltaT = 10, β2 = 2 a running variance",
                  "the same update (shared with pins) and deltaT = 10 (delta_t; 0.2: 1); β2 = 2 not offered"),
        Deviation("step order", "clip at 1.0, Adamax step (decoupled decay 0.01, linear warm-up and "
                  "decay), then the importance on the stepped weights",
                  "the same order and rates with torch's Adamax (bias-corrected first moment, not "
                  "mt-dnn's); optimizer=adamw, importance_after_step off: 0.2's order"),
        Deviation("pool", "the six matrices and their biases (name filter)",
                  "the same (bias_pool; off: weights only, as 0.2); embeddings frozen in training (CPU)"),
        Deviation("schedule", "cubic from the initial to the final warm-up, masks every deltaT steps",
                  "the same cubic shape with prunelens's warmup/final fractions and prune_every"),
        Deviation("live scores", "not in the paper", "Ī·U over a few training-split batches without "
                  "updates, the open window flushed at the end (0.2 dropped it)"),
        Deviation("budget", "BERT-base/DeBERTa on GLUE, GPU", "MiniLM-L6 on Rotten Tomatoes, 150 steps × 16 (CPU)"),
        LOSS_DEVIATION,
    ),
)
