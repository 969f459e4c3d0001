"""The benchmark suite behind ``prunelens bench``: seconds and ratios, all in one run.

Owns :func:`run_bench` and the naive baseline it is measured against. Everything is timed in the
same process on the same data (the session's split, ``--limit`` respected), wall-clock seconds
(``time.perf_counter``) and, next to them, the process CPU seconds (``time.process_time``), which
stay meaningful when other jobs share the cores. Nothing here is used by the dashboard.

Measured (JSON keys):

- ``naive_s``: tokenize each batch of 32 in file order, pad to the batch, HF forward without
  ``inference_mode``;
- ``forward_s``: one reference forward pass (pre-tokenized, length-sorted, ``inference_mode``);
- ``eval_p50_s`` / ``eval_p90_s``: a slider sweep over head sparsities (michel scores, global):
  ``Evaluator.compare`` of each new mask, full data, fresh evaluator, in slider order;
- ``first_estimate_s``: p50 of ``Evaluator.estimate`` (fixed random subset) for the same moves;
- ``ratio``: ``naive_s / eval_p50_s``;
- ``michel_s``, ``ablation_s`` (all heads, leave-one-out) and their ratios to ``forward_s``;
- ``curve_cold_s`` / ``curve_cached_s``: a 4-method × 10-sparsity head curve with scores in the
  store but no curve points, then again from the store;
- ``physical_vs_masked``: masked (hook) forward seconds / physically pruned forward seconds at 50%
  heads (``physical_vs_masked_neuron`` at 50% neurons); > 1 is a speed-up; timed by the one
  protocol of :mod:`prunelens.analysis.timing` (warm-up, interleaved repeats, median, the spread
  in ``*_detail``), as the Prune page and ``prune --physical`` time it;
- ``precision``: what pruned masks were evaluated with (``bf16`` = checked bf16, see
  :mod:`prunelens.analysis.precision`); ``path`` and ``why``: which path that is (``checked-bf16`` or
  ``fp32``) and the reason (the CPU's native bf16, ``$ONEDNN_MAX_CPU_ISA``, the requested
  precision, the calibration), also the table's last line; ``cpu_bf16_flags`` and
  ``onednn_max_cpu_isa`` what that was read from; ``fp32_kernel`` the kernel of the fp32
  products (``onednn`` or ``aten``, :func:`prunelens.analysis.fastpath.fp32_kernel`);
- ``eval_fp32_p50_s``: the same slider moves on an exact fp32 evaluator;
  ``eval_fp32_aten_p50_s`` on one whose fp32 products are F.linear (interleaved move by move)
  and ``fp32_onednn_speedup`` the median of their per-move ratios; ``prediction_agreement``
  (a headless encoder: nearest neighbours), ``max_mean_loss_difference``,
  ``max_abs_logit_difference_vs_fp32``, ``min_cosine_vs_fp32``: how far the default path is
  from the exact numbers;
- ``rss_mb``: resident memory of this process with the model loaded and the caches warm.
"""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from prunelens.analysis.cache import ResultStore
from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.fastpath import fp32_kernel
from prunelens.analysis.gates import Masks
from prunelens.analysis.objectives import model_output, nearest_neighbours, unit_rows
from prunelens.analysis.precision import BF16_FLAGS, cpu_flags, isa_cap
from prunelens.analysis import timing
from prunelens.analysis.pruning import physically_prune, select

CURVE_METHODS = ("michel", "magnitude", "random", "ablation")
CURVE_SPARSITIES = tuple(round(0.1 * i, 1) for i in range(10))


class Timer:
    """Wall and CPU seconds of one block."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @contextmanager
    def __call__(self):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - w
            self.cpu = time.process_time() - c


def timed(fn, *args, **kwargs) -> tuple[float, float, object]:
    t = Timer()
    with t():
        out = fn(*args, **kwargs)
    return t.wall, t.cpu, out


def naive_loop(loaded, data, batch_size: int = 32, max_length: int = 128) -> np.ndarray:
    """The baseline: tokenize each batch of 32 in file order, no inference mode; the classifier's
    logits, or a headless encoder's pooled sentence vectors (what the objective compares)."""
    model, tok = loaded.model, loaded.tokenizer
    outputs = []
    for start in range(0, len(data), batch_size):
        texts = data.texts[start:start + batch_size]
        pairs = None if data.text_pairs is None else data.text_pairs[start:start + batch_size]
        enc = tok(texts, pairs, padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")
        outputs.append(model_output(model, dict(enc), loaded.pooling).detach())
    return torch.cat(outputs).numpy()


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (``VmRSS`` / ``VmHWM``; the
    rusage peak is not used: on Linux it carries a forking parent's peak across ``exec``)."""
    values = {"VmRSS:": float("nan"), "VmHWM:": float("nan")}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name = line.split(maxsplit=1)[0] if line.strip() else ""
                if name in values:
                    values[name] = int(line.split()[1]) / 1024
    except OSError:
        pass
    if math.isnan(values["VmHWM:"]):  # no /proc: fall back to rusage
        values["VmHWM:"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return values["VmRSS:"], values["VmHWM:"]


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_bench(session, quick: bool = False, threads: int | None = None,
              progress=None, specs: tuple[str, str, int | None] | None = None,
              skip_ablation: bool = False) -> dict:
    """Run the suite on ``session``'s model and data; returns the JSON-able result.

    ``quick`` uses fewer slider positions and fewer curve sparsities (same keys). ``specs``
    (model, data, limit) lets ``rss_mb`` be measured in a fresh process that holds what the
    dashboard holds; without it, ``rss_mb`` is this process's.
    """
    say = progress or (lambda msg: print(msg, file=__import__("sys").stderr))
    threads = threads or int(os.environ.get("PRUNELENS_BENCH_THREADS", "2"))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = _run(session, quick, say, threads, ResultStore(tmp, shipped_dir=None), skip_ablation)
            if specs is not None:
                say("memory of a dashboard-like process ...")
                out.update(_dashboard_rss(specs, session.objective, threads, tmp))
    finally:
        torch.set_num_threads(old_threads)
    say(format_table(out))
    return out


# (label, key, target, "max" = value must stay below target / "min" = above)
TARGETS = (
    ("naive loop (s)", "naive_s", None, ""),
    ("reference forward (s)", "forward_s", None, ""),
    ("fast forward, unpruned, cold (s)", "fast_forward_s", None, ""),
    ("slider move, full data p50 (s)", "eval_p50_s", 1.0, "max"),
    ("slider move, full data p90 (s)", "eval_p90_s", None, ""),
    ("naive / slider p50", "ratio", 7.0, "min"),
    ("slider move from the shipped store p50 (s)", "slider_shipped_p50_s", 1.0, "max"),
    ("first estimate p50 (s)", "first_estimate_s", 0.3, "max"),
    ("michel / forward", "michel_vs_forward", 3.0, "max"),
    ("ablation of all heads / forward", "ablation_vs_forward", 25.0, "max"),
    ("curve 4x10, cold (s)", "curve_cold_s", 60.0, "max"),
    ("curve 4x10, from the store (s)", "curve_cached_s", 1.0, "max"),
    ("masked / physical, 50% heads", "physical_vs_masked", 1.0, "min"),
    ("masked / physical, 50% neurons", "physical_vs_masked_neuron", 1.0, "min"),
    ("slider move, exact fp32 p50 (s)", "eval_fp32_p50_s", None, ""),
    ("  the same with F.linear p50 (s)", "eval_fp32_aten_p50_s", None, ""),
    ("  fp32 oneDNN speed-up (p50 of ratios)", "fp32_onednn_speedup", None, ""),
    ("prediction agreement with fp32", "prediction_agreement", 1.0, "min"),
    ("min cosine of outputs vs fp32", "min_cosine_vs_fp32", None, ""),
    ("max |mean loss difference| vs fp32", "max_mean_loss_difference", None, ""),
    ("RSS (MiB)", "rss_mb", 2048.0, "max"),
)


# a BERT-base-sized model (issue 14): its own targets where they differ from the default's
LARGE_TARGETS = {"eval_p50_s": None, "first_estimate_s": 0.5, "curve_cold_s": None,
                 "ablation_vs_forward": None, "rss_mb": 4096.0}
LARGE_MODEL_PARAMS = 40_000_000  # encoder parameters a token passes through (a shared layer at
# every depth) above which the large-model targets apply


def targets_for(out: dict) -> list[tuple]:
    """:data:`TARGETS`, with :data:`LARGE_TARGETS` for a model over :data:`LARGE_MODEL_PARAMS`."""
    large = (out.get("encoder_cost_params") or out.get("encoder_params") or 0) > LARGE_MODEL_PARAMS
    return [(label, key, LARGE_TARGETS.get(key, target) if large else target, kind)
            for label, key, target, kind in TARGETS]


def format_table(out: dict) -> str:
    """The result as a plain-text table with the issue's targets (a large model's own)."""
    lines = [f"{'measure':36} {'value':>10}  target", "-" * 60]
    for label, key, target, kind in targets_for(out):
        value = out.get(key)
        shown = "n/a" if value is None else f"{value:10.3f}"
        goal = ""
        if target is not None and value is not None:
            ok = value <= target if kind == "max" else value >= target
            goal = f"{'<=' if kind == 'max' else '>='} {target:g}  {'ok' if ok else 'MISSED'}"
        lines.append(f"{label:36} {shown:>10}  {goal}")
    lines.append(f"masked evaluation: {out.get('precision')}, threads {out.get('threads')}, "
                 f"n={out.get('data', {}).get('n')}, "
                 f"load average {out.get('load_average_before')}")
    lines.append(f"path: {out.get('path')} (why: {out.get('why')}); fp32 products: "
                 f"{out.get('fp32_kernel')} (oneDNN: $PRUNELENS_FP32_KERNEL=aten keeps F.linear)")
    return "\n".join(lines)


def _run(session, quick: bool, say, threads: int, store: ResultStore,
         skip_ablation: bool = False) -> dict:
    from prunelens.analysis.operations import compute_scores

    loaded, data = session.loaded, session.data
    out: dict = {"model": loaded.describe(), "data": data.describe(), "threads": threads,
                 "quick": quick, "load_average_before": list(os.getloadavg()),
                 "encoder_params": loaded.inventory.encoder_params,
                 "encoder_cost_params": loaded.inventory.cost_params}
    ev = Evaluator(loaded, data, device=session.device, objective=session.objective)
    # a fresh session (same objective) on an empty temporary store: nothing is read from or
    # written to the user's
    fresh = replace(session, store=store, _evaluator=ev)

    say("naive loop ...")
    out["naive_s"], out["naive_cpu_s"], naive = timed(naive_loop, loaded, data)
    say("reference forward ...")
    out["forward_s"], out["forward_cpu_s"], ref = timed(ev.reference_outputs)
    out["naive_vs_forward"] = out["naive_s"] / out["forward_s"]
    out["naive_max_abs_logit_difference"] = float(np.abs(naive - ref.logits).max())
    say("fast path, unpruned (cold) ...")
    out["fast_check_s"], _, _ = timed(ev.fast_encoder)  # one probe batch against the reference
    out["fast_forward_s"], out["fast_forward_cpu_s"], _ = timed(lambda: ev.base_outputs)
    # the checked-bf16 path calibrates once (a bf16 pass of the unpruned model) before its first
    # pruned mask; timed here, not inside the first slider move
    out["precision_calibration_s"], _, _ = timed(ev.low_encoder)
    out["precision"] = ev.masked_precision
    out["precision_note"] = ev.low_note
    out["path"], out["why"] = ev.masked_path
    out["cpu_bf16_flags"] = sorted(set(BF16_FLAGS) & cpu_flags())
    out["onednn_max_cpu_isa"] = isa_cap()
    out["fp32_kernel"] = fp32_kernel(session.device)
    if ev.calibration is not None:
        out["precision_calibration"] = {"error": ev.calibration.error, "scale": ev.calibration.scale,
                                        "agreement_before_rechecks": ev.calibration.agreement}
    out["fast_path"] = ev.fast_encoder() is not None
    out["fast_path_note"] = ev.fast_note
    out["base_max_abs_logit_difference"] = float(np.abs(ev.base_outputs.logits - ref.logits).max())

    say("michel (head gradients) ...")
    out["michel_s"], out["michel_cpu_s"], scored = timed(compute_scores, fresh, "michel", "head")
    michel = scored.scores
    out["michel_vs_forward"] = out["michel_s"] / out["forward_s"]

    # slider: michel scores, global scope, increasing sparsity as a user drags
    steps = [0.1, 0.3, 0.5, 0.7] if quick else [round(0.05 * i, 2) for i in range(1, 19)]
    say(f"slider sweep ({len(steps)} positions) ...")
    sub = ev.subset()
    _ = sub.base_outputs  # computed once when the page opens, like the full base
    walls, cpus, est_walls, est_cpus, rechecked = [], [], [], [], []
    for s in steps:
        masks = Masks(head=select(michel, s).astype(np.float32))
        w, c, _ = timed(ev.estimate, masks)
        est_walls.append(w)
        est_cpus.append(c)
        w, c, _ = timed(ev.compare, masks)
        walls.append(w)
        cpus.append(c)
        rechecked.append(ev.rechecked)
    out.update(eval_p50_s=_p(walls, 50), eval_p90_s=_p(walls, 90), eval_p50_cpu_s=_p(cpus, 50),
               first_estimate_s=_p(est_walls, 50), first_estimate_p90_s=_p(est_walls, 90),
               first_estimate_cpu_s=_p(est_cpus, 50), estimate_size=len(sub.data),
               slider_positions=steps, slider_rechecked=rechecked)
    say("the same slider moves, exact fp32 ...")
    out.update(_exact_slider(session, ev, michel, steps))
    out["ratio"] = out["naive_s"] / out["eval_p50_s"]
    out["eval_vs_forward"] = out["eval_p50_s"] / out["forward_s"]
    out.update(_shipped_slider(session, steps))

    if skip_ablation:
        out["ablation_note"] = "skipped (--skip-ablation)"
    else:
        say("ablation of every head ...")
        out["ablation_s"], out["ablation_cpu_s"], _ = timed(compute_scores, fresh, "ablation", "head")
        out["ablation_vs_forward"] = out["ablation_s"] / out["forward_s"]

    say("physically pruned vs masked ...")
    for unit, key in (("head", "physical_vs_masked"), ("neuron", "physical_vs_masked_neuron")):
        shape = loaded.inventory.unit_shape(unit)
        scores = np.random.default_rng(0).random(shape)
        masks = Masks.for_unit(unit, select(scores, 0.5).astype(np.float32))
        small = physically_prune(loaded.model, masks)
        # the one protocol the Prune page and `prune --physical` use (prunelens.analysis.timing)
        t = timing.compare(lambda m=masks: ev.reference_outputs(m), lambda s=small: ev.reference_outputs(None, s))
        fast_s, _, _ = timed(ev.outputs, masks)
        out[key] = t.ratio
        out[f"{key}_detail"] = {
            "masked_s": t.a_seconds, "physical_s": t.b_seconds, "fast_path_masked_s": fast_s,
            "ratio_range": list(t.spread), "protocol": t.describe(),
            "max_abs_logit_difference": float(np.abs(
                ev.reference_outputs(None, small).logits - ev.reference_outputs(masks).logits).max())}
        del small

    say("curve, cold then cached ...")
    out.update(_curve_bench(fresh, ev, quick, skip_ablation))

    out["rss_mb"], out["rss_peak_mb"] = rss_mb()
    out["rss_of"] = "the bench process"
    out["bench_rss_mb"], out["bench_rss_peak_mb"] = out["rss_mb"], out["rss_peak_mb"]
    out["load_average_after"] = list(os.getloadavg())
    return out


_DASHBOARD_PROCESS = """
import json, sys, tempfile
import torch
from prunelens.analysis.bench import rss_mb
from prunelens.analysis.cache import ResultStore
from prunelens.analysis.operations import open_session, prune, prune_estimate
model, data, limit, objective, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
with tempfile.TemporaryDirectory() as tmp:
    session = open_session(model, data, limit, store=ResultStore(tmp, shipped_dir=None), objective=objective)
    _ = session.evaluator.base
    for sparsity in (0.1, 0.3, 0.5, 0.7, 0.9):
        prune_estimate(session, "magnitude", sparsity)
        prune(session, "magnitude", sparsity)
    print(json.dumps(rss_mb()))
"""


def _dashboard_rss(specs: tuple[str, str, int | None], objective: str, threads: int, tmp: str) -> dict:
    """RSS of a fresh process holding what a dashboard session holds: the model, the data, both
    evaluators' caches after five cold slider moves and their estimates (no Streamlit, which
    adds about 100 MiB; docs/PERFORMANCE.md has a real server's figure)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _DASHBOARD_PROCESS, json.dumps([*specs, objective, threads])],
                          capture_output=True, text=True, env={**os.environ, "PRUNELENS_CACHE": tmp})
    if done.returncode != 0:
        return {"rss_note": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    current, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rss_mb": current, "rss_peak_mb": peak, "rss_of": "a dashboard-like process "
            "(model, data, base, 5 cold slider moves with estimates)"}


def _shipped_slider(session, steps: list[float]) -> dict:
    """The dashboard's path for the same slider moves: ``operations.prune`` answered from the
    shipped ``cached_results/`` (read-only here). Only where the shipped store covers every move."""
    from prunelens.analysis.operations import curve_is_stored, prune

    with tempfile.TemporaryDirectory() as tmp:
        shipped = replace(session, store=ResultStore(tmp, session.store.shipped_dir))
        if session.store.shipped_dir is None or not curve_is_stored(shipped, ["michel"], steps):
            return {"slider_shipped_p50_s": None,
                    "slider_shipped_note": "the shipped store does not cover this model and data"}
        # as the Prune page asks (dashboard/results.py): the flipped examples are listed on demand
        walls = [timed(prune, shipped, "michel", s, flips=False)[0] for s in steps]
    return {"slider_shipped_p50_s": _p(walls, 50), "slider_shipped_p90_s": _p(walls, 90)}


def _curve_bench(fresh, ev: Evaluator, quick: bool, skip_ablation: bool = False) -> dict:
    """Scores are in the (temporary) store already; curve points and masked outputs are not
    (``skip_ablation``: the curve leaves ablation out, whose scores were not computed)."""
    from prunelens.analysis.operations import compute_scores, curve

    sparsities = list(CURVE_SPARSITIES[::3] if quick else CURVE_SPARSITIES)
    methods = [m for m in CURVE_METHODS if not (skip_ablation and m == "ablation")]
    for name in methods:
        compute_scores(fresh, name, "head")
    ev.clear_caches()
    cold_w, cold_c, rows = timed(curve, fresh, methods, sparsities, "head")
    cached_w, _, again = timed(curve, fresh, methods, sparsities, "head")
    if [r["accuracy"] for r in rows] != [r["accuracy"] for r in again]:
        raise AssertionError("curve from the store differs from the computed curve")
    return {"curve_cold_s": cold_w, "curve_cold_cpu_s": cold_c, "curve_cached_s": cached_w,
            "curve_methods": methods, "curve_sparsities": sparsities}


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per example, the cosine between the two outputs (logits, or sentence vectors)."""
    return (unit_rows(a) * unit_rows(b)).sum(1)


def _same_predictions(got: np.ndarray, want: np.ndarray, headless: bool) -> int:
    """How many examples the default path decides as the exact path does: the top class of a
    classifier; for a headless encoder, the nearest neighbour in the data set (what checked bf16
    protects, :mod:`prunelens.analysis.precision`)."""
    if not headless:
        return int((got.argmax(1) == want.argmax(1)).sum())
    return int((nearest_neighbours(got) == nearest_neighbours(want)).sum())


def _exact_slider(session, ev: Evaluator, scores: np.ndarray, steps: list[float]) -> dict:
    """The slider moves on an fp32-only evaluator: its p50, and how far the default path's
    numbers are from the exact ones (predictions, mean loss, logits; against the reference
    forward at 30% and 50%)."""
    from prunelens.analysis import fastpath

    exact = Evaluator(session.loaded, session.data, device=session.device, precision="fp32",
                      objective=session.objective)
    _ = exact.base_outputs
    # the same moves with F.linear as the fp32 kernel, interleaved move by move (a ratio in one run)
    kernel, fastpath.FP32_KERNEL = fastpath.FP32_KERNEL, "aten"
    try:
        aten = Evaluator(session.loaded, session.data, device=session.device, precision="fp32",
                         objective=session.objective)
        aten.fast_encoder()
    finally:
        fastpath.FP32_KERNEL = kernel
    _ = aten.base_outputs
    walls, aten_walls, agree, total, loss_diff, logit_diff, ref_diff = [], [], 0, 0, 0.0, 0.0, 0.0
    min_cosine = 1.0
    for s in steps:
        masks = Masks(head=select(scores, s).astype(np.float32))
        w, _, want = timed(exact.outputs, masks)
        walls.append(w)
        aten_walls.append(timed(aten.outputs, masks)[0])
        got = ev.outputs(masks)  # from the evaluator's LRU: computed during the sweep
        agree += _same_predictions(got.logits, want.logits, session.loaded.headless)
        total += len(want.labels)
        min_cosine = min(min_cosine, float(_row_cosines(got.logits, want.logits).min()))
        loss_diff = max(loss_diff, abs(float(got.loss.mean() - want.loss.mean())))
        logit_diff = max(logit_diff, float(np.abs(got.logits - want.logits).max()))
        if s in (0.3, 0.5):
            check = ev.reference_outputs(masks).logits
            ref_diff = max(ref_diff, float(np.abs(want.logits - check).max()))
    return {"eval_fp32_p50_s": _p(walls, 50), "eval_fp32_p90_s": _p(walls, 90),
            "eval_fp32_aten_p50_s": _p(aten_walls, 50),
            "fp32_onednn_speedup": _p([a / w for a, w in zip(aten_walls, walls)], 50),
            "prediction_agreement": agree / total, "min_cosine_vs_fp32": min_cosine,
            "max_mean_loss_difference": loss_diff,
            "max_abs_logit_difference_vs_fp32": logit_diff,
            "slider_max_abs_logit_difference": ref_diff}
