"""How much of the network a slider sweep recomputes with the layer-prefix cache.

    python benchmarks/layer_cache.py [--model default] [--limit N] [--method magnitude]

For each slider step (global head sparsity 5%..90%) it prints the first layer whose mask row
changed (the layer the fast path restarts from) and the CPU seconds of the masked evaluation
against a cache-less fast pass and the reference pass of the same mask, then the ratios.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prunelens.analysis.fastpath import mask_rows, prefix_keys
from prunelens.analysis.evaluate import Evaluator
from prunelens.analysis.gates import Masks
from prunelens.analysis.operations import compute_scores
from prunelens.analysis.pruning import select
from benchmarks.common import open_from, session_parser


def cpu(fn):
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def main() -> None:
    parser = session_parser(__doc__, limit=256, threads=1)
    parser.add_argument("--method", default="magnitude")
    args = parser.parse_args()
    session = open_from(args)
    ev = Evaluator(session.loaded, session.data, precision="fp32")  # the layer cache alone
    encoder = ev.fast_encoder()
    scores = compute_scores(session, args.method, "head").scores
    _ = ev.base_outputs
    layers = session.loaded.inventory.layers
    prev = prefix_keys(mask_rows(None, layers))
    totals = np.zeros(3)
    print(f"{'sparsity':>8} {'start':>5} {'cached':>8} {'no cache':>8} {'reference':>9}")
    for s in [round(0.05 * i, 2) for i in range(1, 19)]:
        masks = Masks(head=select(scores, s).astype(np.float32))
        keys = prefix_keys(mask_rows(masks, layers))
        start = next((i - 1 for i in range(1, layers + 1) if keys[i] != prev[i]), layers)
        prev = keys
        t_cached, _ = cpu(lambda m=masks: ev.outputs(m))
        t_plain, _ = cpu(lambda m=masks: encoder.logits(ev.fast_batches, m, use_cache=False))
        t_ref, _ = cpu(lambda m=masks: ev.reference_outputs(m))
        totals += (t_cached, t_plain, t_ref)
        print(f"{s:8.2f} {start:5d} {t_cached:8.2f} {t_plain:8.2f} {t_ref:9.2f}")
    print(f"reference / cached {totals[2] / totals[0]:.2f}x, reference / no-cache "
          f"{totals[2] / totals[1]:.2f}x (CPU seconds)")


if __name__ == "__main__":
    main()
