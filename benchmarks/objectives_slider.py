"""The slider's speed-up under each objective, measured under one load.

``prunelens bench --objective O`` runs one objective per process; on a shared machine runs
minutes apart see different loads. This script holds one session per objective — ``labels`` and
``agreement`` on the default classifier, ``embedding`` on ``default-embedding`` — and measures,
round by round and objective after objective, the bench's naive loop and four slider moves
(global head sparsities 0.1/0.3/0.5/0.7, a first estimate then the full answer, as the Prune page
does; fresh masks every round, so nothing is answered from a cache of an earlier round). It
prints, per objective, the naive loop and slider p50 (wall and CPU) and their ratio — the bench's
``ratio`` — so the three ratios are comparable.

    python benchmarks/objectives_slider.py --rounds 3 --json F
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report  # noqa: E402
from prunelens.analysis.bench import naive_loop, timed  # noqa: E402
from prunelens.analysis.gates import Masks  # noqa: E402
from prunelens.analysis.operations import open_session  # noqa: E402
from prunelens.analysis.pruning import select  # noqa: E402

SETUPS = (("labels", "default"), ("agreement", "default"), ("embedding", "default-embedding"))
STEPS = (0.1, 0.3, 0.5, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PRUNELENS_BENCH_THREADS", "2")))

    sessions = {}
    for objective, model in SETUPS:
        session = open_session(model, "default", args.limit, objective=objective)
        _ = session.evaluator.base_outputs, session.evaluator.subset().base_outputs  # the page opening
        session.evaluator.low_encoder()  # the checked-bf16 calibration, once
        sessions[objective] = session
    naive = {o: ([], []) for o in sessions}
    slider = {o: ([], []) for o in sessions}
    loads = [os.getloadavg()[0]]
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        scores = rng.random(next(iter(sessions.values())).loaded.inventory.unit_shape("head"))
        for objective, session in sessions.items():
            wall, cpu, _ = timed(naive_loop, session.loaded, session.data)
            naive[objective][0].append(wall)
            naive[objective][1].append(cpu)
            ev = session.evaluator
            for sparsity in STEPS:
                masks = Masks(head=select(scores, sparsity).astype(np.float32))
                ev.estimate(masks)
                wall, cpu, _ = timed(ev.compare, masks)
                slider[objective][0].append(wall)
                slider[objective][1].append(cpu)
        loads.append(os.getloadavg()[0])
    rows = []
    for objective, session in sessions.items():
        n_wall, n_cpu = (float(np.median(v)) for v in naive[objective])
        s_wall, s_cpu = (float(np.median(v)) for v in slider[objective])
        rows.append({"objective": objective, "model": session.loaded.name, "path": session.evaluator.masked_path[0],
                     "naive_p50_s": n_wall, "naive_p50_cpu_s": n_cpu, "slider_p50_s": s_wall,
                     "slider_p50_cpu_s": s_cpu, "ratio": n_wall / s_wall, "ratio_cpu": n_cpu / s_cpu})
    report(rows, [("objective", "objective", ""), ("model", "model", ""), ("path", "path", ""),
                  ("naive_p50_s", "naive p50", ".2f"), ("slider_p50_s", "slider p50", ".3f"),
                  ("ratio", "ratio", ".2f"), ("ratio_cpu", "CPU ratio", ".2f")],
           loads, args.json, rounds=args.rounds, steps=STEPS)

if __name__ == "__main__":
    main()
