"""Write docs/FIDELITY.md: each paper's headline claim tested in miniature on the default.

Every number comes from the result store (user store, then the shipped ``cached_results/``);
anything missing is computed through the same functions as the CLI and stored, so running
``prunelens precompute`` first makes this script instant.

    python scripts/fidelity.py [--out docs/FIDELITY.md] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import math
import time
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prunelens.analysis.cache import canonical  # noqa: E402
from prunelens.analysis.compare import PairedDifference, joint_rule, paired_difference  # noqa: E402
from prunelens.analysis.gates import Masks  # noqa: E402
from prunelens.analysis.methods.admm import VARIANT_ORDER  # noqa: E402
from prunelens.analysis.eval_results import correct_flags  # noqa: E402
from prunelens.analysis.methods import all_methods  # noqa: E402
from prunelens.analysis.operations import compute_scores, curve, mask_for, open_session  # noqa: E402

import objective_fidelity  # noqa: E402  (this folder: the label-free section)
from prunelens.analysis.run_result import RunResult, normalise  # noqa: E402
from prunelens.analysis.training import get_trainer, train_command  # noqa: E402

HEAD_BASELINES = ["random", "magnitude", "michel"]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def signed(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def point(session, method: str, sparsity: float, unit: str = "head", scope: str = "global",
          params: dict | None = None) -> dict:
    return curve(session, [method], [sparsity], unit, scope, {method: params} if params else None)[0]


SEEDS = (0, 1, 2)  # the multi-seed comparisons' seeds where a run costs over 5 minutes here
FIVE_SEEDS = (0, 1, 2, 3, 4)  # ≥ 5 seeds where one run costs ≤ 5 minutes here
# each claim's seeds: 5 where one run (all its arms) costs at most 5 minutes on this machine (the
# stored runs' own seconds, reported in the seeds table), 3 where it costs more
CLAIM_SEEDS = {"smp-pruner": SEEDS, "snip": FIVE_SEEDS, "admm": FIVE_SEEDS, "pins": FIVE_SEEDS,
               "srste": SEEDS, "srste-sgd": SEEDS}  # (SR-STE's λ_W: ADMM's arm only, ~1.8 min a run)


def interval(d) -> str:
    return f"{signed(d.mean)} [{signed(d.low)}, {signed(d.high)}]"


def per_seed(d) -> str:
    return " / ".join(signed(v) for v in d.per_seed)


RUN_DEVICES: dict[str, str] = {}  # the report's distinct training runs -> the device each ran on


def runs_of(session, method: str, params: list[dict]) -> list[RunResult]:
    """One stored (or computed) training run per parameter set, in the one RunResult shape."""
    runs = [train_command(session, method, p) for p in params]
    for run in runs:  # a run read by two sections counts once; runs stored before the field: CPU
        RUN_DEVICES[canonical({"method": method, "params": run.get("params")})] = run.get("device", "cpu")
    out = [normalise(run) for run in runs]
    for raw, run in zip(runs, out):
        run.extras["seconds"] = raw.get("seconds")  # what the run took here (the seeds table)
    return out


SEED_ROWS: list[list[str]] = []  # the seeds table: one row per claim, added by its section


# what one run of each claim costs on this 2-core machine when it is not shared (0.2's measurements,
# README) — the ≤ 5 minutes rule's input — and so why it has its seeds
CLAIM_WHY = {
    "smp-pruner": "7–9 min a run: over 5 min, 3 seeds",
    "snip": "2–2.3 min a run: 5 seeds",
    "admm": "2.8–4.3 min a run: 5 seeds",
    "pins": "3.6–4.5 min a run: 5 seeds (the runs took longer on this round's shared machine)",
}


def seeds_row(claim: str, method: str, runs: list[RunResult]) -> None:
    """Record a claim's seeds, what one of its runs took this round (mean of the stored runs) and
    why it has that many seeds (:data:`CLAIM_WHY`)."""
    seconds = [r.extras.get("seconds") for r in runs if r.extras.get("seconds") is not None]
    took = f"{np.mean(seconds) / 60:.1f} min" if seconds else "n/a"
    SEED_ROWS.append([claim, str(len(runs)), took, CLAIM_WHY[method]])


def bits(run: RunResult, variant: str) -> list[bool]:
    """A variant's per-example correctness (the dev sentences, in order)."""
    return correct_flags(run.variants[variant]["correct"])


def paired(a: list[RunResult], a_variant: str, b: list[RunResult], b_variant: str):
    """Paired difference in accuracy of two variants over the same sentences, seed by seed."""
    return paired_difference([bits(r, a_variant) for r in a], [bits(r, b_variant) for r in b])


def mean_accuracy(runs: list[RunResult], variant: str) -> str:
    return pct(np.mean([r.variants[variant]["accuracy"] for r in runs]))


def seed_accuracies(runs: list[RunResult], variant: str) -> str:
    return " / ".join(pct(r.variants[variant]["accuracy"]) for r in runs)


def one_shot_bits(session, method: str, sparsity: float, unit: str = "head", scope: str = "global",
                  params: dict | None = None) -> list[bool]:
    """Per-example correctness of the model pruned once by a method's (stored) scores, no training."""
    return mask_bits(session, unit, mask_for(compute_scores(session, method, unit, params).scores, sparsity, scope))


def mask_bits(session, unit: str, mask) -> list[bool]:
    """Per-example correctness of the model with ``unit``s masked by a keep-mask."""
    return correct_flags(session.evaluator.record(Masks.for_unit(unit, np.asarray(mask)))["correct"])


RANDOM_MASKS = 40  # random masks per sparsity and scope: the random reference's distribution


@dataclass
class RandomReference:
    """The random masks at one sparsity and scope: every mask's per-example correctness, and
    whether they are all the masks there are (``exact``) or :data:`RANDOM_MASKS` seeded draws."""

    bits: list[list[bool]]
    exact: bool
    seeds_shown: list[float]  # accuracies of random seeds 0-2 (0.2's reference draws)

    @property
    def accuracies(self) -> np.ndarray:
        return np.asarray([np.mean(b) for b in self.bits])

    def describe(self) -> str:
        what = (f"all {len(self.bits)} masks (exact enumeration)" if self.exact
                else f"{len(self.bits)} random masks")
        acc = self.accuracies
        return (f"{what}: mean {pct(acc.mean())}, sd {100 * acc.std(ddof=1):.1f} pts, "
                f"range {pct(acc.min())}–{pct(acc.max())}")


_REFERENCES: dict = {}


def random_reference(session, sparsity: float, unit: str = "head", scope: str = "global") -> RandomReference:
    """The random reference at ``sparsity``/``scope``: every mask when the space is small (FFN
    blocks: all C(6, 3) = 20 ways to drop half), else :data:`RANDOM_MASKS` random masks (the
    ``random`` method's seeds 0..N-1). Evaluations only, no training: computed here, seconds."""
    key = (sparsity, unit, scope)
    if key not in _REFERENCES:
        shape = session.loaded.inventory.unit_shape(unit)
        size = int(np.prod(shape))
        removed = round(sparsity * size)
        seeds = [point(session, "random", sparsity, unit, scope, {"seed": s})["accuracy"] for s in SEEDS]
        if unit != "head" and math.comb(size, removed) <= RANDOM_MASKS:
            masks = []
            for dropped in combinations(range(size), removed):
                mask = np.ones(size, dtype=np.int8)
                mask[list(dropped)] = 0
                masks.append(mask.reshape(shape))
            _REFERENCES[key] = RandomReference([mask_bits(session, unit, m) for m in masks], True, seeds)
        else:
            _REFERENCES[key] = RandomReference(
                [one_shot_bits(session, "random", sparsity, unit, scope, {"seed": seed})
                 for seed in range(RANDOM_MASKS)], False, seeds)
    return _REFERENCES[key]


@dataclass
class AgainstRandom:
    """A one-shot criterion against the random reference: its percentile among the masks and
    the paired difference to their mean (crossed bootstrap over masks and sentences; over
    sentences only when the masks are all there are)."""

    difference: PairedDifference
    percentile: float
    reference: RandomReference

    def text(self) -> str:
        n = len(self.reference.bits)
        return f"p{self.percentile:.0f} of {n}; − mean {interval(self.difference)}"


def against_random(session, method: str, sparsity: float, unit: str = "head", scope: str = "global") -> AgainstRandom:
    """A one-shot criterion (deterministic) against :func:`random_reference` at the same sparsity."""
    mine = one_shot_bits(session, method, sparsity, unit, scope)
    ref = random_reference(session, sparsity, unit, scope)
    if ref.exact:  # the reference mean is exact: only the sentences are a sample
        diff = paired_difference([mine], [np.mean(ref.bits, axis=0)])
    else:  # the masks are a sample too: resample them with the sentences
        diff = paired_difference([mine] * len(ref.bits), ref.bits)
    return AgainstRandom(diff, percentile_of(ref, float(np.mean(mine))), ref)


def percentile_of(ref: RandomReference, accuracy: float) -> float:
    """Where ``accuracy`` falls among the reference's masks (ties count half), in percent."""
    acc = ref.accuracies
    return float(100.0 * (np.sum(acc < accuracy) + 0.5 * np.sum(acc == accuracy)) / len(acc))


RANDOM_NOTE = ("The random reference is a distribution, not a draw: each criterion is placed among "
               f"{RANDOM_MASKS} random masks at the same sparsity and scope (the `random` method's seeds "
               f"0–{RANDOM_MASKS - 1}; for FFN blocks all masks there are), as its percentile (p50 = the "
               "median random mask) and its paired difference to their mean, with a crossed bootstrap "
               "over the masks and the sentences (sentences only where the masks are all there are).")


PAIRED_NOTE = ("Intervals: a crossed bootstrap (4,000 resamples) of the mean paired difference in "
               "accuracy, over seeds and sentences: each resample draws the seeds with replacement and, "
               "independently, the 872 dev sentences with replacement; the interval is the central 95% of "
               "the resampled means, so it holds for new seeds as well as new sentences (0.2 averaged the "
               "seeds per sentence first, and the seed-to-seed spread cancelled out). With 3 seeds the "
               "bootstrap sees only 10 distinct seed draws (5 seeds: 126) and is narrower than a "
               "t-interval on the per-seed differences: a verdict that rests on the seed spread wants "
               "≥ 5 seeds (the seeds table at the top says which claims have them). Per seed: the same "
               "difference in each seed alone.")


def snip_training_section(session) -> list[str]:
    """The four SNIP training arms at equal budget over the claim's seeds: SN + prior and SN only
    (a run with the default SN and its λ = 0 control), prior only and neither (the same with
    ``sn=off``), and the untrained model, each pruned by its own function norms; paired intervals;
    then what exact W/σ normalization does to the fine-tuned default."""
    from prunelens.analysis.methods.snip import PRUNE_GRID

    seeds = CLAIM_SEEDS["snip"]
    sn_runs = runs_of(session, "snip", [{"seed": seed} for seed in seeds])
    off_runs = runs_of(session, "snip", [{"sn": "off", "seed": seed} for seed in seeds])
    seeds_row("SNIP training (SN + prior, SN only, prior only, neither)", "snip", sn_runs)
    arms = {"SN + prior": (sn_runs, "trained"), "SN only": (sn_runs, "control"),
            "prior only": (off_runs, "trained"), "neither": (off_runs, "control"),
            "untrained": (sn_runs, "untrained")}

    def at(run: RunResult, unit: str, sparsity: float) -> RunResult:
        """One row of the run's pruned grid, as variants (trained / control / untrained)."""
        row = next(r for r in run.extras["pruned"] if (r["unit"], r["sparsity"]) == (unit, sparsity))
        return RunResult(run.method, run.params, variants={n: row[n] for n in ("trained", "control", "untrained")})

    contrasts = [("SN + prior − SN only (the prior, with SN)", "SN + prior", "SN only"),
                 ("SN + prior − prior only (SN, with the prior)", "SN + prior", "prior only"),
                 ("SN only − neither (SN alone)", "SN only", "neither"),
                 ("prior only − neither (the prior alone)", "prior only", "neither"),
                 ("SN + prior − untrained", "SN + prior", "untrained")]
    rows, diff_rows, verdicts = [], [], {}
    for unit, sparsity in PRUNE_GRID:
        picked = {name: ([at(r, unit, sparsity) for r in runs], variant) for name, (runs, variant) in arms.items()}
        rows.append([f"{unit} {sparsity:.0%}", *(mean_accuracy(*picked[name]) for name in arms)])
        for label, a, b in contrasts:
            d = paired(*picked[a], *picked[b])
            verdicts[(unit, sparsity, a, b)] = d
            diff_rows.append([f"{unit} {sparsity:.0%}", label, interval(d), per_seed(d), d.verdict(a, b)])
    unpruned = [mean_accuracy(runs, variant) for runs, variant in arms.values()]
    steps = sn_runs[0].params["steps"]
    prior = verdicts[("head", 0.5, "SN + prior", "SN only")]
    sn_effect = verdicts[("head", 0.5, "SN + prior", "prior only")]
    return [
        f"### SNIP training: SN and the identity prior, four arms at equal budget ({len(seeds)} seeds)",
        "",
        f"Each run fine-tunes a copy for {steps} steps of {sn_runs[0].params['batch_size']} training "
        "sentences. *SN + prior*: active spectral normalization (every matrix capped at "
        f"{sn_runs[0].params['cap_ratio']:g} × its starting σ_max) and the identity prior on heads, "
        f"attention and FFN blocks (λ = {sn_runs[0].params['penalty']:g}); *SN only*: the same with λ = 0; "
        "*prior only*: the prior without SN; *neither*: plain fine-tuning. All four train the same "
        "steps on the same batches (the seed's). Each model is then pruned by its *own* function norms "
        f"(measured on {sn_runs[0].params['norm_examples']} training sentences; lowest first, global) and "
        "evaluated on the 872 dev sentences; *untrained* is the model as loaded, pruned by its norms. "
        + PAIRED_NOTE,
        "",
        "Pre-registered pass rule (0.2's, kept): at 50% of heads, SN + prior beats SN only (the "
        "prior's effect under SN) with the interval above 0 (PASS); an interval below 0 is a FAIL; "
        "an interval covering 0 is *within noise*. The other contrasts isolate SN (with and without "
        "the prior) and the prior without SN, under the same rule, not pre-registered as claims.",
        "",
        table(["pruned", *arms], rows + [["unpruned", *unpruned]]),
        "",
        table(["pruned", "comparison", "paired difference", "per seed", "verdict"], diff_rows),
        "",
        f"Result at 50% of heads: the identity prior under SN **{prior.rule}** ({interval(prior)}); SN "
        f"with the prior against the prior alone **{sn_effect.rule}** ({interval(sn_effect)}).",
        "",
        *snip_exact_paragraph(session, sn_runs[0]),
    ]


def snip_exact_paragraph(session, cap_run: RunResult) -> list[str]:
    """What exact W/σ normalization (the paper's placement) does to the fine-tuned default, at the
    start and after the same budget, beside the cap: why the cap stays the default."""
    exact = runs_of(session, "snip", [{"sn": "exact", "control": False, "seed": 0}])[0]
    start = exact.extras["evaluation_at_start"]
    cap_start = cap_run.extras.get("evaluation_at_start") or {}
    loaded = exact.variants["untrained"]
    return [
        "**Exact spectral normalization (W/σ_max, the paper's placement), measured** (seed 0, "
        f"{exact.params['steps']} steps, λ = {exact.params['penalty']:g}): the fine-tuned default "
        f"({pct(loaded['accuracy'])}, loss {loaded['loss']:.3f}) with every matrix divided by its σ_max "
        f"starts at {pct(start['accuracy'])} (loss {start['loss']:.3f}) and reaches "
        f"{pct(exact.variants['trained']['accuracy'])} (loss {exact.variants['trained']['loss']:.3f}) "
        "after the budget; the cap at "
        f"{cap_run.params['cap_ratio']:g} × σ_max starts at {pct(cap_start.get('accuracy', float('nan')))} "
        f"(loss {cap_start.get('loss', float('nan')):.3f}) and reaches {pct(cap_run.variants['trained']['accuracy'])}. "
        + ("Exact SN cannot start from a fine-tuned model in this budget, so the cap stays the default "
           "(`sn=exact` is an option); the paper normalizes from the start of fine-tuning, which a "
           "fine-tuned checkpoint has already passed."
           if exact.variants["trained"]["accuracy"] < cap_run.variants["trained"]["accuracy"] - 0.02 else
           "Exact SN recovers within the budget here; the cap stays the default only because the shipped "
           "runs are keyed by it (see the table above for its effect)."),
        "",
    ]


def smp_regime_section(session) -> list[str]:
    """SMP's own regime over :data:`SEEDS`: the learned pruner's top half per layer, fine-tuned,
    against random and magnitude halves fine-tuned the same steps on the same batches."""
    runs = runs_of(session, "smp-pruner", [{"seed": seed} for seed in CLAIM_SEEDS["smp-pruner"]])
    seeds_row("SMP's regime (pruner, random and magnitude halves, fine-tuned)", "smp-pruner", runs)
    arms = ("smp_pruner", "random", "magnitude")
    diffs = {other: paired(runs, "smp_pruner", runs, other) for other in ("random", "magnitude")}
    params = runs[0].params
    verdicts = [d.rule for d in diffs.values()]
    result = joint_rule(diffs.values())
    start = runs[0].extras["start"]
    return [
        f"### SMP's own regime: the learned pruner against random and magnitude halves ({len(runs)} seeds)",
        "",
        f"`smp-pruner`'s training mode: the pruner (ndf-8 CNN on 64-token attention maps) is trained "
        f"{params['pruner_steps']} SGD steps of {params['batch_size']} training sentences on the "
        f"*pre-trained* encoder ({start}); the top half of the heads of every layer is kept, and the "
        f"pruned model is fine-tuned {params['steps']} steps of {params['finetune_batch_size']}. The "
        "random half and the magnitude half (sum of |w| of each head's weights) are fine-tuned the same "
        "steps on the same batches; all are evaluated on the 872 dev sentences. " + PAIRED_NOTE,
        "",
        "Pre-registered pass rule: the pruner's half beats both the random and the magnitude half with "
        "intervals above 0 (PASS); either interval below 0 is a FAIL; otherwise *within noise*.",
        "",
        table(["arm (36 of 72 heads removed, fine-tuned)", "accuracy (mean)", "per seed"],
              [[arm.replace("_", " "), mean_accuracy(runs, arm), seed_accuracies(runs, arm)] for arm in arms]),
        "",
        table(["comparison", "paired difference", "per seed", "verdict"],
              [[f"SMP pruner − {other}", interval(d), per_seed(d), v]
               for (other, d), v in zip(diffs.items(), verdicts)]),
        "",
        f"Result: **{result}**. The live `smp-pruner` scores (Importance, Prune, Compare) are the same "
        "pruner trained on the loaded — here fine-tuned — model; the table above is the paper's regime.",
        "",
    ]


def admm_section(session) -> list[str]:
    """ADMM 2:4 over the claim's seeds against the equal-budget control (the one-shot projection +
    the same SR-STE steps on the same batches), and admm-quant (one seed) beside it."""
    seeds = CLAIM_SEEDS["admm"]
    runs = runs_of(session, "admm", [{"seed": seed} for seed in seeds])
    seeds_row("ADMM 2:4 against one-shot + the same SR-STE steps", "admm", runs)
    first = runs[0]
    steps = first.extras["train"]["steps"]
    equal = paired(runs, "admm", runs, "oneshot_finetuned")
    untrained = paired(runs, "admm", runs, "oneshot")
    training = paired(runs, "oneshot_finetuned", runs, "oneshot")
    comparisons = [("ADMM − (one-shot 2:4 + the same SR-STE steps): **the rule**", equal),
                   ("ADMM − one-shot 2:4 (no training)", untrained),
                   ("(one-shot 2:4 + SR-STE steps) − one-shot 2:4: training alone", training)]
    variants = [v for v in VARIANT_ORDER if v in first.variants and v != "dense"]
    quant = runs_of(session, "admm-quant", [{}])[0]
    return [
        f"## ADMM — 2:4 pattern pruning ({len(seeds)} seeds)",
        "",
        "Claim (Wang): ADMM with a growing penalty, then SR-STE fine-tuning, keeps 2:4-sparse "
        "transformers closer to dense accuracy than one-shot magnitude N:M projection. Here: all six "
        f"linear matrices of every layer at exactly 2:4 (constraint satisfied: "
        f"{first.extras['constraint'].get('exactly_n_fraction', 'n/a')}), a {steps}-step CPU budget. "
        f"The equal-budget control trains the one-shot projection with SR-STE for the same {steps} "
        "steps on the same batches. " + PAIRED_NOTE,
        "",
        "Pre-registered pass rule: ADMM beats one-shot 2:4 + the same SR-STE steps with the "
        "interval above 0 (PASS); below 0 is a FAIL; covering 0 is *within noise*. Beating the "
        "untrained projection alone is not the claim (training without ADMM does most of that).",
        "",
        table(["model", "accuracy (mean)", "per seed", "loss (mean)"],
              [[first.label("dense"), pct(first.variants["dense"]["accuracy"]), "(no training)",
                f"{first.variants['dense']['loss']:.3f}"]]
              + [[first.label(v), mean_accuracy(runs, v), seed_accuracies(runs, v),
                  f"{np.mean([r.variants[v]['loss'] for r in runs]):.3f}"] for v in variants]),
        "",
        table(["comparison", "paired difference", "per seed", "verdict"],
              [[name, interval(d), per_seed(d), d.rule] for name, d in comparisons]),
        "",
        f"Result: **{equal.rule}** ({interval(equal)}).",
        "",
        *srste_section(session, runs[:len(CLAIM_SEEDS["srste"])]),
        "### ADMM with a 4-bit quantization Z-step (`admm-quant`, one seed)",
        "",
        table(["model", "accuracy", "loss"],
              [[quant.label(v), pct(quant.variants[v]["accuracy"]), f"{quant.variants[v]['loss']:.3f}"]
               for v in VARIANT_ORDER if v in quant.variants]),
        "",
        f"Finding (one seed, so no verdict): ADMM's quantized model {pct(quant.variants['admm']['accuracy'])} "
        f"(loss {quant.variants['admm']['loss']:.3f}) against plain 4-bit rounding + the same SR-STE steps "
        f"{pct(quant.variants['oneshot_finetuned']['accuracy'])} (loss "
        f"{quant.variants['oneshot_finetuned']['loss']:.3f}) and untrained 4-bit rounding "
        f"{pct(quant.variants['oneshot']['accuracy'])} (loss {quant.variants['oneshot']['loss']:.3f}).",
        "",
    ]


def loss_gap(a: list[RunResult], b: list[RunResult]) -> float:
    """The largest |loss difference| of ADMM's final model between paired runs."""
    return max(abs(x.variants["admm"]["loss"] - y.variants["admm"]["loss"]) for x, y in zip(a, b))


def srste_section(session, default_runs: list[RunResult]) -> list[str]:
    """Does SR-STE's decay λ_W on the pruned weights matter at this budget? ADMM's final model with
    λ_W = 0 against the default λ_W = 2e-4 (the same seeds, batches and steps), under the default
    Adam fine-tune and under the official SGD recipe (``srste_optimizer=sgd``)."""
    seeds = [r.params["seed"] for r in default_runs]
    lean = {"finetune_baseline": False}  # ADMM's own arm only: the comparison needs no baseline
    no_decay = runs_of(session, "admm", [{**lean, "decay": 0.0, "seed": s} for s in seeds])
    sgd_seeds = CLAIM_SEEDS["srste-sgd"]
    sgd = runs_of(session, "admm", [{**lean, "srste_optimizer": "sgd", "seed": s} for s in sgd_seeds])
    sgd_no_decay = runs_of(session, "admm", [{**lean, "srste_optimizer": "sgd", "decay": 0.0, "seed": s}
                                             for s in sgd_seeds])
    adam_same = [r for r in default_runs if r.params["seed"] in sgd_seeds]
    decay = default_runs[0].params["decay"]
    comparisons = [
        (f"Adam: λ_W = {decay:g} − λ_W = 0", paired(default_runs, "admm", no_decay, "admm"), "λ_W", "λ_W = 0"),
        (f"SGD (official recipe): λ_W = {decay:g} − λ_W = 0", paired(sgd, "admm", sgd_no_decay, "admm"),
         "λ_W", "λ_W = 0"),
        ("SGD − Adam (both λ_W = 2e-4)", paired(sgd, "admm", adam_same, "admm"), "SGD", "Adam"),
    ]
    arms = [("Adam, λ_W = 2e-4 (default)", default_runs), ("Adam, λ_W = 0", no_decay),
            (f"SGD, λ_W = 2e-4 (sgd_lr {sgd[0].params['sgd_lr']:g})", sgd), ("SGD, λ_W = 0", sgd_no_decay)]
    adam, official = comparisons[0][1], comparisons[1][1]
    return [
        f"### SR-STE: does the decay λ_W on pruned weights matter at this budget? ({len(seeds)} seeds; "
        f"SGD: {len(sgd_seeds)})",
        "",
        "SR-STE's fine-tune passes the gradient straight to the dense weights and adds λ_W·(1 − mask)⊙W "
        "on the pruned ones (aojunzz/NM-sparsity: λ_W = 2e-4 under SGD with momentum 0.9, weight decay "
        "5e-5 and a cosine schedule). prunelens fine-tunes with Adam by default, whose per-coordinate "
        "normalization leaves the λ_W term a nominal share of each step; `srste_optimizer=sgd` is the "
        "official recipe. Each arm is ADMM's final 2:4 model after the same W-steps and "
        f"{default_runs[0].params['finetune_steps']} SR-STE steps on the same batches; only the "
        "optimizer or λ_W differs. " + PAIRED_NOTE,
        "",
        table(["ADMM 2:4 after SR-STE", "accuracy (mean)", "per seed"],
              [[name, mean_accuracy(r, "admm"), seed_accuracies(r, "admm")] for name, r in arms]),
        "",
        table(["comparison", "paired difference", "per seed", "verdict"],
              [[name, interval(d), per_seed(d), d.verdict(a, b)] for name, d, a, b in comparisons]),
        "",
        f"Finding: λ_W under Adam **{adam.verdict('λ_W', 'λ_W = 0')}** ({interval(adam)}); under the "
        f"official SGD recipe **{official.verdict('λ_W', 'λ_W = 0')}** ({interval(official)}). "
        + f"The final dev loss differs by at most {loss_gap(default_runs, no_decay):.1e} (Adam) and "
        f"{loss_gap(sgd, sgd_no_decay):.1e} (SGD) between λ_W = 2e-4 and 0: the kept weights' updates do "
        "not see the term, so it acts only through mask flips, and none changed a prediction here. "
        + ("At this budget λ_W does not matter measurably with either optimizer."
           if adam.within_noise and official.within_noise else
           "λ_W moves the result at this budget under at least one optimizer (see the table)."),
        "",
    ]


PINS_SPARSITIES = (0.8, 0.9)


def training_description(params: dict) -> str:
    """How a PINS run trained, in words, from its stored parameters (official values or 0.2's)."""
    loss = ("the self-regularized loss α·T²·KL(teacher ‖ student) + (1 − α)·CE with the entropy "
            "weight α = 1 − H(p)/log C (the official code)" if params.get("self_reg_loss") == "alpha_mix"
            else "the self-regularized loss CE + T²·KL(teacher ‖ student) (0.2)")
    teacher = (f"the teacher re-selected every {params['teacher_every']} steps as the best student on 256 "
               "held-out training examples (the official code; it selects on the dev set)"
               if params.get("teacher") == "best_dev" else "the teacher the student at every sparsity increase")
    return f"{loss}, {teacher}, {_optimizer_words(params, 'AdamW')}"


def _optimizer_words(params: dict, optimizer: str) -> str:
    schedule = ("linear warm-up and decay of the rate (η follows it)" if params.get("lr_schedule") == "linear"
                else "a constant rate")
    clip = f"gradients clipped at {params['clip_grad']:g}" if params.get("clip_grad") else "no clipping"
    return f"{optimizer} with {schedule}, {clip}"


def platon_description(params: dict) -> str:
    optimizer = ("Adamax with decoupled decay 0.01" if params.get("optimizer") == "adamax" else "AdamW")
    order = ("the importance after the step" if params.get("importance_after_step")
             else "the importance before the step")
    return f"deltaT = {params['delta_t']}, {_optimizer_words(params, optimizer)}, {order}"


def pins_section(session) -> list[str]:
    """PINS (with and without self-regularization), PLATON and gradual magnitude at equal budgets
    (same cubic schedule, steps and batches) at 80% and 90% weight sparsity, over :data:`SEEDS`."""
    rows, comparisons, verdicts = [], [], {}
    seeds = CLAIM_SEEDS["pins"]
    for sparsity in PINS_SPARSITIES:
        pins = runs_of(session, "pins", [{"target_sparsity": sparsity, "seed": seed} for seed in seeds])
        seeds_row(f"PINS at {sparsity:.0%} (self-reg on/off, gradual magnitude)", "pins", pins)
        # PLATON's default run (gradual baseline) is its seed-0 run at 80%; the others skip the baseline
        platon = runs_of(session, "platon", [{} if (sparsity, seed) == (0.8, 0) else
                                             {"target_sparsity": sparsity, "baseline": "none", "seed": seed}
                                             for seed in seeds])
        arms = [("PINS, self-regularized (the method)", pins, "pins_self_reg"),
                ("PINS, no self-regularization", pins, "pins_no_self_reg"),
                (r"PLATON (\|θ·g\|, no self-regularization)", platon, "platon"),
                ("gradual magnitude (same schedule)", pins, "baseline")]
        rows += [[pct(sparsity), name, mean_accuracy(r, v), seed_accuracies(r, v)] for name, r, v in arms]
        pairs = {"pins": paired(pins, "pins_self_reg", pins, "baseline"),
                 "platon": paired(platon, "platon", pins, "baseline"),
                 "importance": paired(pins, "pins_no_self_reg", platon, "platon"),
                 "self_reg": paired(pins, "pins_self_reg", pins, "pins_no_self_reg")}
        verdicts[sparsity] = pairs
        names = {"pins": "PINS − gradual magnitude", "platon": "PLATON − gradual magnitude",
                 "importance": "PINS without self-reg − PLATON (the η·g² term and β2)",
                 "self_reg": "self-regularization on − off"}
        comparisons += [[pct(sparsity), names[k], interval(d), per_seed(d), d.rule] for k, d in pairs.items()]
    params = runs_of(session, "pins", [{}])[0].params
    platon_params = get_trainer("platon").validate({})  # its default run's (runs_of counts runs once)
    signed_run = runs_of(session, "pins", [{"signed": True, "baseline": "none", "compare_self_reg": False}])[0]
    official = runs_of(session, "pins", [{"target_sparsity": 0.8, "seed": 0}])[0]
    results = {k: verdicts[0.9][k].rule for k in ("pins", "self_reg")}
    return [
        f"## PINS — principled importance with self-regularization, PLATON beside it ({len(seeds)} seeds)",
        "",
        "Claim (Ren & Zhu): the −θ·g + η·g² importance with iterative cubic pruning keeps accuracy "
        "at high weight sparsity, better than magnitude, and self-regularization adds to it. Here: "
        f"the six linear matrices of every layer{' and their biases' if params.get('bias_pool') else ''}, "
        "the official update (|S| before the EMA, importance Ī·U ≥ 0, "
        f"deltaT = {params['delta_t']}), {training_description(params)}, "
        f"{params['steps']} steps of {params['batch_size']} with the cubic schedule (warm-up "
        f"{params['warmup']:.0%}, final {params['final']:.0%} at the target). Every arm trains the same "
        "steps on the same batches: gradual magnitude prunes by |θ| on that schedule (the equal-budget "
        f"baseline), PLATON by Ī·U of |θ·g| (β2 = 0.95, no self-regularization, {platon_description(platon_params)}). "
        + PAIRED_NOTE,
        "",
        "Pre-registered pass rules, at 90% (the high-sparsity claim): PINS beats gradual magnitude "
        "with the interval above 0, and self-regularization on beats off with the interval above 0; "
        "an interval below 0 is a FAIL, one covering 0 is *within noise*. The 80% rows and the "
        "PLATON comparisons are reported under the same rule, not pre-registered as claims.",
        "",
        table(["weight sparsity", "arm", "accuracy (mean)", "per seed"], rows),
        "",
        table(["weight sparsity", "comparison", "paired difference", "per seed", "verdict"], comparisons),
        "",
        f"Result at 90%: PINS against gradual magnitude **{results['pins']}** "
        f"({interval(verdicts[0.9]['pins'])}); self-regularization **{results['self_reg']}** "
        f"({interval(verdicts[0.9]['self_reg'])}).",
        "",
        "The signed variant (an option, not the method: the EMA of signed S instead of |S|), one seed "
        f"at 80% with self-regularization: {pct(signed_run.variants['pins_self_reg']['accuracy'])}, "
        f"against {pct(official.variants['pins_self_reg']['accuracy'])} for the official |S| on the "
        "same seed, batches and budget (one seed: no verdict).",
        "",
    ]


AGREEMENT_SEEDS = SEEDS  # a seeded criterion's score maps in the agreement section


def rho_interval(score_maps: list[np.ndarray], reference: np.ndarray, resamples: int = 2000) -> str:
    """Spearman's ρ with the reference, averaged over a seeded criterion's score maps (one per seed;
    a deterministic criterion has one), with a crossed bootstrap interval: each resample draws the
    seeds and, independently, the heads with replacement and averages ρ over the drawn seeds."""
    maps = np.asarray(score_maps, dtype=np.float64)
    rhos = [spearmanr(m, reference)[0] for m in maps]
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(resamples):
        heads = rng.integers(0, len(reference), len(reference))
        seeds = rng.integers(0, len(maps), len(maps))
        draws.append(np.mean([spearmanr(maps[k][heads], reference[heads])[0] for k in seeds]))
    low, high = np.nanquantile(draws, [0.025, 0.975])
    return f"{np.mean(rhos):+.2f} [{low:+.2f}, {high:+.2f}]"


def head_score_maps(session, method: str) -> list[np.ndarray]:
    """A criterion's head scores: one map per seed of :data:`AGREEMENT_SEEDS` when it is seeded."""
    from prunelens.analysis.methods import get_method

    seeded = any(p.name == "seed" for p in get_method(method).params)
    params = [{"seed": seed} for seed in AGREEMENT_SEEDS] if seeded else [None]
    return [compute_scores(session, method, "head", p).scores.ravel() for p in params]


def changes_since_02(session) -> list[str]:
    """The top section: what a reader of 0.2's report should know changed (issue 28)."""
    pins = get_trainer("pins").validate({})
    official = pins["self_reg_loss"] == "alpha_mix" and pins["teacher"] == "best_dev" and pins["delta_t"] == 10
    training = ("PINS and PLATON train as their official code does (each an option whose other value is "
                "0.2's behaviour): the α-mix self-regularized loss α·T²·KL + (1 − α)·CE with the entropy α "
                "always on (0.2: CE + T²·KL, so CE had about four times the official weight); the teacher "
                "re-selected every 50 steps as the best student on held-out training examples (0.2: the "
                "student at every sparsity increase); deltaT = 10 (0.2: 1); the biases in the pool; "
                "gradients clipped at 1.0 before the importance update; linear warm-up and decay; PLATON "
                "with Adamax and its importance after the step. The PINS tables below are new runs."
                if official else
                "PINS and PLATON's official training (α-mix loss, dev-selected teacher, deltaT = 10, biases, "
                "clipping, schedule, Adamax for PLATON) is available as options; the runs below still use "
                "0.2's defaults (regenerating them did not fit this release's CPU budget).")
    return [
        "## What changed since 0.2",
        "",
        "- **Intervals hold beyond the seeds that were run.** Every paired interval is a crossed "
        "bootstrap over seeds *and* sentences (`prunelens.analysis.compare.paired_difference`); 0.2 "
        "averaged the seeds per sentence and took the standard error over sentences, so the seed-to-seed "
        "spread cancelled out. Every verdict below is recomputed with it.",
        f"- **Random references are distributions, not draws.** Each one-shot criterion is placed among "
        f"{RANDOM_MASKS} random masks at the same sparsity and scope (for FFN blocks among all 20 ways to "
        "drop 3 of 6), as a percentile and a difference to their mean; 0.2 compared with random seeds "
        "0–2, which at 50% of heads per layer are among the lowest draws.",
        f"- {training}",
        "- **SNIP** measures its function norms on a seeded sample of the training split (1024 sentences, "
        "like every other criterion; 0.2 used the dev sentences it is evaluated on), in the live scores and "
        "in the training mode's pruning. Its training claim has four arms at equal budget (SN + prior, SN "
        "only, prior only, neither), so SN's effect is separated from the prior's; exact W/σ_max "
        "normalization is measured from the fine-tuned default (why the cap stays the default). It is "
        "named \"SNIP (spectral-normalized identity prior, Lin et al. 2020)\" everywhere, not Lee et al.'s "
        "connection sensitivity.",
        "- **SR-STE** has the official SGD recipe as an option (`srste_optimizer=sgd`), and whether its "
        "decay λ_W matters at this budget is measured under both optimizers.",
        "- **Seeds**: ≥ 5 where one run costs ≤ 5 minutes here; the table below gives each claim's seeds "
        "and what one of its runs took.",
        "- **Live PINS/PLATON scores** flush the accumulation window still open after the last batch; "
        "0.2 dropped it, so with delta_t ≥ batches every score was exactly 0 and pruning fell back to "
        "index order without a warning. The shipped live scores were recomputed; the pages and "
        "`prunelens score` now warn when a score map is constant.",
        "- The deviation tables list only what remains different from the official code.",
        "",
        SEEDS_TABLE_MARK,
        "",
    ]


SEEDS_TABLE_MARK = "<!-- seeds table -->"  # replaced by the seeds table once every section has run


def seeds_table() -> list[str]:
    return ["Seeds per claim (one run = every arm of one seed). The rule reads a run's cost on this "
            "2-core machine when it is not shared (0.2's measurements); this round's runs shared it "
            "with other jobs, so they took longer (the stored runs' mean):", "",
            table(["claim", "seeds", "one run this round", "cost unshared, and so"], SEED_ROWS)]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "FIDELITY.md"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seeds", action="append", default=[], metavar="CLAIM=N",
                        help=f"use only the first N seeds of a claim ({', '.join(CLAIM_SEEDS)})")
    args = parser.parse_args()
    for item in args.seeds:
        claim, _, count = item.partition("=")
        CLAIM_SEEDS[claim] = CLAIM_SEEDS[claim][:int(count)]
    start = time.time()
    session = open_session("default", "default", args.limit)
    base = session.evaluator.base
    methods = all_methods()
    head_methods = [m for m in methods if "head" in methods[m].units]
    out = [
        "# Fidelity: each paper's headline claim, tested in miniature",
        "",
        f"Generated by `scripts/fidelity.py` from the result store on {time.strftime('%Y-%m-%d')}. "
        f"Model: the embedded default (MiniLM-L6, 6 × 12 heads, fine-tuned on Rotten Tomatoes; "
        f"fingerprint `{session.loaded.fingerprint}`). Evaluation: {base.n} dev sentences; unpruned "
        f"accuracy {pct(base.accuracy)} ± {pct(base.accuracy_se)}, loss {base.loss:.3f}. One standard "
        f"error of an accuracy delta on this set is about 1 point, so differences below ~2 points are "
        "noise; loss and margin are more sensitive. These are small CPU-budget replications, not the "
        "papers' setups (BERT-base, GLUE, GPU-hours of training).",
        "",
        *changes_since_02(session),
    ]

    # --- SMP: 50% of heads per layer ------------------------------------------------------------
    rows = []
    layer_ref = random_reference(session, 0.5, "head", "layer")
    for m in head_methods:
        p = point(session, m, 0.5, scope="layer")
        vs = against_random(session, m, 0.5, scope="layer") if m != "random" else None
        rows.append([m, pct(p["accuracy"]), signed(p["accuracy"] - base.accuracy),
                     f"{p['loss'] - base.loss:+.3f}",
                     f"{vs.text()}: {vs.difference.verdict(m, 'random')}" if vs else
                     f"(seed 0; seeds 0–2: {', '.join(pct(a) for a in layer_ref.seeds_shown)}, at "
                     f"percentiles {', '.join(f'{percentile_of(layer_ref, a):.0f}' for a in layer_ref.seeds_shown)})"])
    rows.sort(key=lambda r: -float(r[1].rstrip("%")))
    smp_row = next(r for r in rows if r[0] == "smp")
    pruner_row = next(r for r in rows if r[0] == "smp-pruner")
    criteria = [r for r in rows if not methods[r[0]].diagnostic]  # diagnostics are not ranked
    for r in rows:
        if methods[r[0]].diagnostic:
            r[0] += " (diagnostic, not ranked)"
    out += [
        "## SMP — keep the top half of heads in every layer",
        "",
        "Claim (Zhang et al.): pruning half the heads per layer by preserving the representation "
        "distribution costs little accuracy, better than other single-shot criteria. Here: 36 of 72 "
        "heads removed, 6 per layer, no fine-tuning after pruning. " + RANDOM_NOTE,
        "",
        f"Random reference: {layer_ref.describe()}.",
        "",
        table(["method", "accuracy", "Δ accuracy", "Δ loss",
               f"vs {len(layer_ref.bits)} random masks: percentile; − their mean"], rows),
        "",
        f"Finding: the SMP pruner (`smp-pruner`) {pruner_row[2]}, its ridge surrogate (`smp`) "
        f"{smp_row[2]}, the mean of {len(layer_ref.bits)} random masks "
        f"{signed(layer_ref.accuracies.mean() - base.accuracy)}; ranks {[r[0] for r in criteria].index('smp-pruner') + 1} "
        f"and {[r[0] for r in criteria].index('smp') + 1} of {len(criteria)} criteria by accuracy; against "
        f"random: pruner {pruner_row[4]}, surrogate {smp_row[4]}. Rows less than ~2 points apart are "
        "within noise (see above), so the ranks of neighbours are not findings. This is not SMP's "
        "setting (it prunes the pre-trained encoder, then fine-tunes): that is below, with its rule.",
        "",
    ]
    out += smp_regime_section(session)

    # --- SNIP: 50% module compression ------------------------------------------------------------
    rows, snip_vs = [], {}
    refs = {u: random_reference(session, 0.5, u) for u in ("head", "ffn")}
    for m in ["snip", "magnitude", "michel"]:
        h = point(session, m, 0.5, "head")
        f = point(session, m, 0.5, "ffn")
        ffn_mask = mask_for(compute_scores(session, m, "ffn").scores, 0.5)
        removed = ", ".join(str(i) for i in np.flatnonzero(ffn_mask == 0))
        vs = {u: against_random(session, m, 0.5, u) for u in ("head", "ffn")}
        snip_vs = snip_vs or vs
        rows.append([m, pct(h["accuracy"]), f"{h['loss'] - base.loss:+.3f}", pct(h["compression"]),
                     vs["head"].text(), pct(f["accuracy"]), f"{f['loss'] - base.loss:+.3f}", removed,
                     pct(f["compression"]), vs["ffn"].text()])
    rows.append(["random (mean of the masks)", pct(refs["head"].accuracies.mean()), "—", rows[0][3], "—",
                 pct(refs["ffn"].accuracies.mean()), "—", "—", rows[0][8], "—"])
    snip_result = joint_rule(v.difference for v in snip_vs.values())
    snip_relative = compute_scores(session, "snip", "ffn", {"relative": True}).scores
    ffn_ref = refs["ffn"]
    out += [
        "## SNIP — module norms as importance (spectral-normalized identity prior)",
        "",
        "Claim (Lin et al.): modules whose output norm is small act like the identity and can be "
        "dropped; thresholding the norm prunes ~50% of modules at small accuracy cost. Here: 50% of "
        "heads (global) and 50% of FFN blocks (3 of 6) removed by each criterion, no retraining. "
        + RANDOM_NOTE,
        "",
        f"Random references: heads, {refs['head'].describe()}; FFN blocks, {ffn_ref.describe()}.",
        "",
        "Pre-registered pass rule: SNIP's norms beat the random reference's mean at 50% of heads *and* "
        "at 50% of FFN blocks with both intervals above 0 (PASS); either interval below 0 is a FAIL; "
        "otherwise *within noise*.",
        "",
        table(["criterion", "heads 50%: acc", "Δ loss", "params removed",
               f"vs {len(refs['head'].bits)} random masks", "FFN 50%: acc", "Δ loss", "FFN layers removed",
               "params removed", f"vs all {len(ffn_ref.bits)} masks"], rows),
        "",
        "Rows with the same FFN layers removed have the same mask, hence the same numbers.",
        "",
        f"Result: **{snip_result}** — heads {interval(snip_vs['head'].difference)} "
        f"({snip_vs['head'].difference.rule}), FFN blocks {interval(snip_vs['ffn'].difference)} "
        f"({snip_vs['ffn'].difference.rule}). At 50% of heads SNIP keeps "
        f"{rows[0][1]} against magnitude {rows[1][1]} and Michel {rows[2][1]}; at 50% of FFN blocks its "
        f"absolute norms keep {rows[0][5]} (percentile {snip_vs['ffn'].percentile:.0f} of the "
        f"{len(ffn_ref.bits)} possible masks) against magnitude {rows[1][5]}. The SN training the paper "
        "pairs the norms with is tested below.",
        "",
        "FFN relative norms per layer (||F(x)|| / ||x||): "
        + ", ".join(f"{v:.2f}" for v in snip_relative) + ".",
        "",
    ]
    out += snip_training_section(session)

    out += admm_section(session)
    out += pins_section(session)

    # --- what each method really computes here ------------------------------------------------
    out += ["## Deviations from the papers and their official code", "",
            "The same lists are on each method's page in the dashboard (\"About this method\").", ""]
    for name, method in methods.items():
        if method.deviations:
            cells = [[text.replace("|", "\\|") for text in (d.aspect, d.paper, d.prunelens)]
                     for d in method.deviations]
            out += [f"### {name} — {method.paper or method.title}", "",
                    table(["aspect", "paper / official code", "prunelens"], cells), ""]

    # --- agreement with the reference ranking ----------------------------------------------------
    reference = compute_scores(session, "ablation", "head").scores.ravel()
    lowered = int(np.sum(reference < 0))
    rows = []
    random_rhos = np.array([[spearmanr(compute_scores(session, "random", "head", {"seed": seed}).scores.ravel(), r)[0]
                             for r in (reference, np.abs(reference))] for seed in range(RANDOM_MASKS)])
    for m in head_methods:
        if m == "ablation":
            continue
        label = f"{m} (diagnostic)" if methods[m].diagnostic else m
        if m == "random":
            rows.append([f"random ({RANDOM_MASKS} seeds: mean [central 95%])"]
                        + [f"{col.mean():+.2f} [{np.quantile(col, 0.025):+.2f}, {np.quantile(col, 0.975):+.2f}]"
                           for col in random_rhos.T])
            continue
        maps = head_score_maps(session, m)
        label += f" ({len(maps)} seeds)" if len(maps) > 1 else ""
        rows.append([label] + [rho_interval(maps, r) for r in (reference, np.abs(reference))])
    out += [
        "## Agreement with leave-one-out ablation (heads)",
        "",
        "Spearman rank correlation of each method's head scores with the loss increase of masking "
        "each head alone, and with the size of that loss change in either direction. Ablation measures "
        f"on the first rows of the training split: masking {lowered} of the 72 heads alone *lowers* "
        "the loss there. (prunelens 0.1 ablated on the dev split, where 44 heads did: the fine-tuned "
        "model is over-confident on its held-out mistakes, so removing a head that sharpens its "
        "predictions helped the dev loss, and gradient criteria correlated negatively with that "
        "signed ranking. Measured on training data the reference no longer rewards that.) ρ of a "
        f"seeded criterion is the mean over its seeds {AGREEMENT_SEEDS[0]}–{AGREEMENT_SEEDS[-1]} (each "
        "seed draws other training sentences or batches), with the same crossed bootstrap as the "
        "accuracy intervals: each of 2,000 resamples draws the seeds and, independently, the 72 heads "
        "with replacement (central 95%); a deterministic criterion has the heads alone. The random row "
        f"is the distribution over {RANDOM_MASKS} random score maps, the ρ that chance alone gives.",
        "",
        table(["method", "ρ vs ablation (loss increase)", "ρ vs \\|loss change\\|"], rows),
        "",
        *objective_fidelity.section(session),  # label-free pruning (scripts/objective_fidelity.py)
        "",
        "Where the numbers came from: every evaluation above ran on this machine's CPU; the "
        "training runs ran on " + ", ".join(f"{d.upper() if d != 'cpu' else 'CPU'} ({n} runs)"
                                             for d, n in sorted(Counter(RUN_DEVICES.values()).items())) + ".",
        "",
        f"_Generated in {time.time() - start:.0f} s._",
        "",
    ]
    mark = out.index(SEEDS_TABLE_MARK)
    out[mark:mark + 1] = seeds_table()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(out))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
