"""Checked bf16 against exact fp32 on one model and data set: speed and how far the numbers move.

    python benchmarks/precision.py [--model default] [--data default] [--limit N]
        [--sparsities 0.1,0.3,0.5,0.7,0.9] [--unit head] [--estimate] [--seeds 1]
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python benchmarks/precision.py --candidates [--repeats 3]

For each sparsity (random scores, seeds 0..K-1, global) it prints the seconds of a cold evaluation on
an fp32-only evaluator and on a checked-bf16 one, their ratio, how many examples the bf16 path
recomputed in fp32, prediction agreement, and the differences of mean loss and largest logit.

``--candidates`` measures what a CPU without native bf16 could use instead of fp32 (run it with
``ONEDNN_MAX_CPU_ISA`` capped below bf16 to simulate one): exact fp32, oneDNN's bf16 (emulated
there) and dynamic int8 (:data:`prunelens.analysis.fastpath.INT8`), both under the checked-prediction rule
of :mod:`prunelens.analysis.precision` (int8 is forced through its calibration refusal to show what it
would cost). Per path: calibration error, wall and process-CPU seconds of each mask, the ratio to
fp32 in the same round, examples recomputed in fp32, agreement; ``--repeats`` rounds, each with
fresh caches. See analysis/precision.py and docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prunelens.analysis import precision
from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.fastpath import INT8
from prunelens.analysis.gates import Masks
from prunelens.analysis.pruning import select
from benchmarks.common import open_from, session_parser


def main() -> None:
    parser = session_parser(__doc__)
    parser.add_argument("--sparsities", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--unit", default="head", choices=("head", "neuron"))
    parser.add_argument("--estimate", action="store_true",
                        help="run each mask's first estimate before (as the dashboard does): the "
                             "bf16 pass then skips the subset's exactly known examples")
    parser.add_argument("--seeds", type=int, default=1, help="random score draws per sparsity")
    parser.add_argument("--candidates", action="store_true",
                        help="fp32 vs bf16 vs int8, all checked (a CPU without native bf16)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of --candidates")
    args = parser.parse_args()
    session = open_from(args)
    if args.candidates:
        return candidates(session, args)
    exact = Evaluator(session.loaded, session.data, precision="fp32")
    low = Evaluator(session.loaded, session.data, precision="bf16")
    _ = exact.base_outputs, low.base_outputs
    start = time.perf_counter()
    low.low_encoder()
    print(f"calibration {time.perf_counter() - start:.2f} s: {low.calibration or low.low_note}")
    shape = session.loaded.inventory.unit_shape(args.unit)
    print(f"{'seed':>4} {'sparsity':>8} {'fp32 s':>7} {'bf16 s':>7} {'ratio':>6} {'rechecked':>9} "
          f"{'agree':>6} {'|dloss|':>9} {'max|dlogit|':>11}")
    for seed, sparsity in ((seed, float(s)) for seed in range(args.seeds)
                           for s in args.sparsities.split(",")):
        scores = np.random.default_rng(seed).random(shape)
        masks = Masks.for_unit(args.unit, select(scores, sparsity).astype(np.float32))
        if args.estimate:
            low.estimate(masks)
        t0 = time.perf_counter()
        want = exact.outputs(masks)
        t1 = time.perf_counter()
        got = low.outputs(masks)
        t2 = time.perf_counter()
        agree = float(np.mean(want.logits.argmax(1) == got.logits.argmax(1)))
        print(f"{seed:4d} {sparsity:8.2f} {t1 - t0:7.2f} {t2 - t1:7.2f} {(t1 - t0) / (t2 - t1):6.2f} "
              f"{low.rechecked:9d} {agree:6.3f} {abs(want.loss.mean() - got.loss.mean()):9.2e} "
              f"{np.abs(want.logits - got.logits).max():11.2e}")


def _timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - w, time.process_time() - c, out


def candidates(session, args) -> None:
    """fp32 vs checked bf16 vs checked int8 on the same masks, ratios within one round."""
    print(f"native bf16: {precision.native_bf16()} ({precision.no_native_bf16_reason() or 'yes'}); "
          f"auto -> {precision.masked_path('auto')}")
    precision.MAX_RELATIVE_ERROR = float("inf")  # int8 would be refused: measure what it would cost
    shape = session.loaded.inventory.unit_shape(args.unit)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    masks = [Masks.for_unit(args.unit, select(np.random.default_rng(seed).random(shape), s)
                            .astype(np.float32))
             for seed in range(args.seeds) for s in sparsities]
    evaluators = {"fp32": Evaluator(session.loaded, session.data, precision="fp32"),
                  "bf16": Evaluator(session.loaded, session.data, precision="bf16"),
                  "int8": Evaluator(session.loaded, session.data, precision="bf16")}
    evaluators["int8"].low_dtype = INT8
    for name, ev in evaluators.items():
        _ = ev.base_outputs
        wall, cpu, _ = _timed(ev.low_encoder)
        cal = ev.calibration
        print(f"{name}: calibration {wall:.2f} s wall, {cpu:.2f} s cpu; "
              + (f"error {cal.error:.3g}, scale {cal.scale:.3g}" if cal else "exact"))
    print(f"{'round':>5} {'path':>5} {'p50 wall':>8} {'p50 cpu':>8} {'cpu/fp32':>8} "
          f"{'rechecked':>9} {'agree':>6}")
    for r in range(args.repeats):
        for ev in evaluators.values():
            ev.clear_caches()
        want, row = {}, {}
        for name, ev in evaluators.items():
            walls, cpus, rechecked, agree = [], [], [], []
            for i, m in enumerate(masks):
                w, c, out = _timed(ev.outputs, m)
                walls.append(w)
                cpus.append(c)
                rechecked.append(ev.rechecked if name != "fp32" else 0)
                if name == "fp32":
                    want[i] = out.logits.argmax(1)
                agree.append(float(np.mean(out.logits.argmax(1) == want[i])))
            row[name] = (np.median(walls), np.median(cpus), rechecked, min(agree))
        for name, (w, c, rechecked, agree) in row.items():
            print(f"{r:5d} {name:>5} {w:8.3f} {c:8.3f} {c / row['fp32'][1]:8.2f} "
                  f"{min(rechecked):4d}-{max(rechecked):<4d} {agree:6.3f}", flush=True)


if __name__ == "__main__":
    main()
