"""``random``: seeded uniform scores, the floor every method must clear."""

from __future__ import annotations

import numpy as np

from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.base import SEED, Method, Work


class RandomScores(Method):
    def compute(self, ctx, unit, params):
        rng = np.random.default_rng(params["seed"])
        return rng.random(ctx.loaded.inventory.unit_shape(unit))


METHOD = RandomScores(
    name="random",
    title="Random",
    plain="Random scores: the baseline that every real method has to beat.",
    summary="Uniform random scores from a seed: the floor every method must clear.",
    units=UNITS,
    params=(SEED,),
    cost=lambda params, inventory, unit: Work(),  # no model, no data
)
