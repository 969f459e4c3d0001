"""Checked bf16 against exact fp32 on one model and data set: speed and how far the numbers move.

    python benchmarks/precision.py [--model default] [--data default] [--limit N]
        [--sparsities 0.1,0.3,0.5,0.7,0.9] [--unit head] [--estimate] [--seeds 1]

For each sparsity (random scores, seeds 0..K-1, global) it prints the seconds of a cold evaluation on
an fp32-only evaluator and on a checked-bf16 one, their ratio, how many examples the bf16 path
recomputed in fp32, prediction agreement, and the differences of mean loss and largest logit.
See analysis/precision.py and docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.evaluate import Evaluator
from analysis.gates import Masks
from analysis.pruning import select
from benchmarks.common import open_from, session_parser


def main() -> None:
    parser = session_parser(__doc__)
    parser.add_argument("--sparsities", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--unit", default="head", choices=("head", "neuron"))
    parser.add_argument("--estimate", action="store_true",
                        help="run each mask's first estimate before (as the dashboard does): the "
                             "bf16 pass then skips the subset's exactly known examples")
    parser.add_argument("--seeds", type=int, default=1, help="random score draws per sparsity")
    args = parser.parse_args()
    session = open_from(args)
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


if __name__ == "__main__":
    main()
