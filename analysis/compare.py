"""Comparing methods: ranks, rank correlations, overlap of kept sets, one unit across methods.

Owns the numbers the dashboard's Compare page and head-details panel show:

- :func:`normalized_ranks`: scores -> ranks in [0, 1] (0 = least important), so heatmaps of
  different methods share one colour scale;
- :func:`rank_correlations`: Spearman and Kendall (``scipy.stats``) between every pair of score maps;
- :func:`jaccard_matrix`: Jaccard overlap of the kept sets at one sparsity;
- :func:`unit_scores`: one unit's score and rank under every method (cheap methods computed,
  expensive ones read from the store only);
- :func:`score_summary`: range and quantiles of a score map (for threshold sliders);
- :func:`constant_scores_warning`: the warning shown when a score map ranks nothing (all equal);
- :func:`paired_difference`: the difference of two methods' per-example outcomes on the same
  examples over several seeds, with a crossed bootstrap interval over seeds and examples (every
  verdict of docs/FIDELITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from prunelens.analysis.errors import ParamError
from prunelens.analysis.methods import all_methods
from prunelens.analysis.methods.base import Progress, no_progress
from prunelens.analysis.pruning import emptied_layers, select


def normalized_ranks(scores) -> np.ndarray:
    """Ranks of all units of a map scaled to [0, 1] (ties averaged); same shape as ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ParamError("no scores to rank")
    if s.size == 1:
        return np.zeros(s.shape)
    r = stats.rankdata(s.reshape(-1), method="average") - 1.0
    return (r / (s.size - 1)).reshape(s.shape)


def _check_same_shape(scores: dict[str, np.ndarray]) -> list[str]:
    names = list(scores)
    if not names:
        raise ParamError("choose at least one method to compare")
    shapes = {np.asarray(scores[n]).shape for n in names}
    if len(shapes) != 1:
        raise ParamError(f"score maps have different shapes {sorted(shapes)} (compare one unit at a time)")
    return names


@dataclass
class RankCorrelations:
    methods: list[str]
    spearman: np.ndarray  # (m, m); NaN where a map is constant
    kendall: np.ndarray

    def as_dict(self) -> dict:
        clean = lambda a: [[None if np.isnan(v) else float(v) for v in row] for row in a]
        return {"methods": self.methods, "spearman": clean(self.spearman), "kendall": clean(self.kendall)}


def rank_correlations(scores: dict[str, np.ndarray]) -> RankCorrelations:
    """Spearman's rho and Kendall's tau (tau-b) between every pair of flattened score maps."""
    names = _check_same_shape(scores)
    flat = [np.asarray(scores[n], dtype=np.float64).reshape(-1) for n in names]
    m = len(names)
    rho = np.eye(m)
    tau = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            if np.ptp(flat[i]) == 0 or np.ptp(flat[j]) == 0:
                rho[i, j] = rho[j, i] = tau[i, j] = tau[j, i] = np.nan
                continue
            rho[i, j] = rho[j, i] = float(stats.spearmanr(flat[i], flat[j]).statistic)
            tau[i, j] = tau[j, i] = float(stats.kendalltau(flat[i], flat[j]).statistic)
    return RankCorrelations(names, rho, tau)


def jaccard(mask_a, mask_b) -> float:
    """|kept in both| / |kept in either| of two 0/1 keep-masks (1.0 when both keep nothing)."""
    a = np.asarray(mask_a).astype(bool)
    b = np.asarray(mask_b).astype(bool)
    if a.shape != b.shape:
        raise ParamError(f"masks have different shapes {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def kept_masks(scores: dict[str, np.ndarray], sparsity: float, scope: str = "global",
               keep_one_per_layer: bool = False) -> dict[str, np.ndarray]:
    return {n: select(s, sparsity=sparsity, scope=scope, keep_one_per_layer=keep_one_per_layer)
            for n, s in scores.items()}


def emptied_by(scores: dict[str, np.ndarray], sparsities: list[float], scope: str = "global",
               keep_one_per_layer: bool = False) -> dict[str, dict[float, list[int]]]:
    """For each method, the sparsities (of ``sparsities``) at which its mask removes a whole
    layer, and those layers: where a global scope sends a model to chance."""
    out: dict[str, dict[float, list[int]]] = {}
    for name, s in scores.items():
        for sparsity in sparsities:
            layers = emptied_layers(select(s, sparsity=sparsity, scope=scope,
                                           keep_one_per_layer=keep_one_per_layer))
            if layers:
                out.setdefault(name, {})[sparsity] = layers
    return out


def jaccard_matrix(scores: dict[str, np.ndarray], sparsity: float, scope: str = "global",
                   keep_one_per_layer: bool = False) -> np.ndarray:
    """Pairwise Jaccard overlap of the sets each method keeps at ``sparsity``."""
    names = _check_same_shape(scores)
    masks = kept_masks(scores, sparsity, scope, keep_one_per_layer)
    m = len(names)
    out = np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = jaccard(masks[names[i]], masks[names[j]])
    return out


def score_summary(scores) -> dict:
    """Min, max and quartiles of a score map (threshold sliders and captions)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    q = np.quantile(s, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"min": float(q[0]), "q1": float(q[1]), "median": float(q[2]), "q3": float(q[3]),
            "max": float(q[4]), "n": int(s.size)}


def constant_scores_warning(scores, method: str = "") -> str | None:
    """A warning when every unit has the same score (then no ranking exists and pruning would
    fall back to index order), else None. No setting in a method's declared ranges should give
    this (``tests/unit/test_smp_pins.py`` checks PINS and PLATON); the pages and the CLI say so if
    one ever does."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2 or np.ptp(s) > 0:
        return None
    value = float(s.reshape(-1)[0])
    return (f"every {'' if not method else method + ' '}score is {value:g}: these scores rank nothing "
            "(pruning by them would remove units in index order); try more batches or other parameters")


def unit_scores(session, unit: str, index: tuple[int, ...], compute_cheap: bool = True,
                progress: Progress = no_progress) -> list[dict]:
    """One unit's score under every registered method that scores ``unit`` (default parameters).

    Each row: method, title, score, rank (1 = most important), of (units), source
    (``store``, ``computed`` or ``missing`` for an expensive method not in the store).
    """
    from prunelens.analysis.operations import compute_scores, stored_scores

    rows = []
    methods = [m for m in all_methods().values() if unit in m.units]
    for k, method in enumerate(methods):
        params = method.validate(None)
        scores = stored_scores(session, method.name, unit, params)
        if scores is not None:
            source = "store"
        elif compute_cheap and not method.is_expensive(params, session.loaded.inventory,
                                                       len(session.data), unit):
            scores = compute_scores(session, method.name, unit, params).scores
            source = "computed"
        else:
            rows.append({"method": method.name, "title": method.title, "score": None, "rank": None,
                         "of": None, "source": "missing"})
            continue
        value = float(scores[index])
        rank = int(np.sum(scores.reshape(-1) > value)) + 1
        rows.append({"method": method.name, "title": method.title, "score": value, "rank": rank,
                     "of": int(scores.size), "source": source})
        progress((k + 1) / len(methods), method.name)
    return rows


WITHIN_NOISE = "within noise (neither pass nor fail)"


@dataclass
class PairedDifference:
    """Mean of a - b over the same examples and seeds, with a crossed-bootstrap interval
    (:func:`paired_difference`): ``low``/``high`` hold for new seeds *and* new sentences."""

    mean: float
    se: float  # the standard deviation of the bootstrap means
    low: float
    high: float
    seeds: int
    examples: int
    per_seed: list[float]
    resamples: int = 0  # bootstrap resamples drawn (or enumerated, when ``exact``)
    exact: bool = False  # every resample enumerated (a small table), not drawn

    @property
    def within_noise(self) -> bool:
        """The interval covers zero: no ranking of the two."""
        return self.low <= 0.0 <= self.high

    def verdict(self, a: str = "a", b: str = "b") -> str:
        if self.within_noise:
            return "within noise"
        return f"{a} better" if self.mean > 0 else f"{b} better"

    @property
    def rule(self) -> str:
        """The pre-registered outcome of the claim "a beats b" (docs/FIDELITY.md): PASS when the
        interval lies above 0, FAIL below 0, and within noise when it covers 0 — never a ranking
        inside the noise."""
        return "PASS" if not self.within_noise and self.mean > 0 else "FAIL" if not self.within_noise else WITHIN_NOISE


def joint_rule(differences) -> str:
    """The outcome of a claim made of several "a beats b" parts: PASS when every part passes,
    FAIL when any part fails, within noise otherwise."""
    rules = [d.rule for d in differences]
    return "PASS" if all(r == "PASS" for r in rules) else "FAIL" if "FAIL" in rules else WITHIN_NOISE


BOOTSTRAP_RESAMPLES = 4000  # drawn resamples of a crossed bootstrap (fixed seed: reproducible)


def _index_tuples(n: int) -> np.ndarray:
    """Every draw of ``n`` indices from ``n`` with replacement, as counts per index: (n**n, n)."""
    draws = np.array(np.meshgrid(*[np.arange(n)] * n, indexing="ij")).reshape(n, -1).T
    return np.stack([np.bincount(row, minlength=n) for row in draws])


def paired_difference(a: list, b: list, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> PairedDifference:
    """The paired difference ``a[s][i] - b[s][i]`` (seed or draw ``s``, example ``i``: 0/1
    correctness or any per-example value), its mean over every seed and example, and a crossed
    bootstrap interval: each resample draws the seeds with replacement *and*, independently, the
    examples with replacement, and takes the mean difference over the drawn seeds × drawn examples;
    the interval is the central ``level`` of those means (percentiles), ``se`` their standard
    deviation. Seed-to-seed spread and sentence sampling both widen it, so a verdict holds for
    new seeds and new sentences, not only for the seeds that were run (0.2 averaged the seeds per
    sentence first, and the seed spread cancelled out). With one seed only examples are resampled.
    When the table has at most ``resamples`` distinct resamples (seeds**seeds × examples**examples)
    they are all enumerated (``exact``); otherwise ``resamples`` are drawn with a fixed ``seed``.

    "Seeds" can be any paired axis: the comparison of a deterministic criterion against N random
    masks passes the criterion's row N times and the masks as the seeds."""
    a_arr = np.asarray([np.asarray(x, dtype=np.float64) for x in a])
    b_arr = np.asarray([np.asarray(x, dtype=np.float64) for x in b])
    if a_arr.shape != b_arr.shape or a_arr.ndim != 2 or a_arr.shape[1] < 2:
        raise ParamError(f"paired_difference needs two equal (seeds, examples) arrays with at least 2 "
                         f"examples, got {a_arr.shape} and {b_arr.shape}")
    diff = a_arr - b_arr
    n_seeds, n_examples = diff.shape
    exact = n_seeds ** n_seeds * n_examples ** n_examples <= resamples
    if exact:
        seed_counts, example_counts = _index_tuples(n_seeds), _index_tuples(n_examples)
        means = (seed_counts @ diff @ example_counts.T).reshape(-1) / (n_seeds * n_examples)
    else:
        rng = np.random.default_rng(seed)
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)
        example_counts = rng.multinomial(n_examples, np.full(n_examples, 1.0 / n_examples), size=resamples)
        means = ((seed_counts @ diff) * example_counts).sum(axis=1) / (n_seeds * n_examples)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(float(diff.mean()), float(means.std()), float(low), float(high), n_seeds,
                            n_examples, [float(v) for v in diff.mean(axis=1)], int(means.size), bool(exact))
