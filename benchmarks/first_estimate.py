"""The Prune page's first estimate at BERT-base size, family against family, in one process.

``prunelens bench`` measures one model per run; on a shared 2-core machine two runs minutes apart
see different loads, so their wall seconds cannot be compared. This script loads several
BERT-base-shaped folders (``benchmarks/bert_base.py --family F --out DIR``) into one process and
times ``Evaluator.estimate`` (the first estimate a slider move shows) on each, *interleaved* round
by round with fresh random head masks, so every family sees the same load. It prints wall and CPU
p50 per family and each family's ratio to the first folder's (BERT's, whose quiet-machine figure
is in docs/PERFORMANCE.md).

    python benchmarks/first_estimate.py /tmp/bert /tmp/distilbert /tmp/mpnet --json F
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report  # noqa: E402
from prunelens.analysis.gates import Masks  # noqa: E402
from prunelens.analysis.operations import open_session  # noqa: E402
from prunelens.analysis.pruning import select  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PRUNELENS_BENCH_THREADS", "2")))

    evaluators = {}
    for folder in args.folders:
        session = open_session(str(folder), str(folder / "dev.csv"), args.limit)
        ev = session.evaluator
        _ = ev.subset().base_outputs  # what the page computes when it opens
        evaluators[folder.name] = (ev, session.loaded.inventory.unit_shape("head"))
    walls: dict[str, list[float]] = {name: [] for name in evaluators}
    cpus: dict[str, list[float]] = {name: [] for name in evaluators}
    loads = [os.getloadavg()[0]]
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        sparsity = float(rng.uniform(0.1, 0.7))
        scores = rng.random(next(iter(evaluators.values()))[1])  # the same mask for every family
        for name, (ev, shape) in evaluators.items():
            masks = Masks(head=select(scores.reshape(shape), sparsity).astype(np.float32))
            wall, cpu = time.perf_counter(), time.process_time()
            ev.estimate(masks)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
        loads.append(os.getloadavg()[0])
    first = next(iter(evaluators))
    rows = []
    for name, (ev, _) in evaluators.items():
        rows.append({"folder": name, "path": ev.masked_path[0], "estimate_size": ev.estimate_size,
                     "wall_p50_s": float(np.median(walls[name])), "cpu_p50_s": float(np.median(cpus[name])),
                     "wall_vs_first": float(np.median(np.array(walls[name]) / np.array(walls[first]))),
                     "cpu_vs_first": float(np.median(np.array(cpus[name]) / np.array(cpus[first])))})
    report(rows, [("folder", "folder", ""), ("path", "path", ""), ("estimate_size", "n", "d"),
                  ("wall_p50_s", "wall p50", ".3f"), ("cpu_p50_s", "CPU p50", ".3f"),
                  ("wall_vs_first", "wall/first", ".2f"), ("cpu_vs_first", "CPU/first", ".2f")],
           loads, args.json, rounds=args.rounds, limit=args.limit)

if __name__ == "__main__":
    main()
