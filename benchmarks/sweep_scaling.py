"""Sweep speed-up: one spec run from an empty store under each executor, as ratios to one worker.

Runs ``prunelens sweep SPEC --store <fresh folder>`` once per configuration (in-process with one
thread, in-process with two, ``--workers 2``, and Ray with ``--workers 2`` CPUs), times each
whole command, checks that every configuration stored the same entries with the same numbers,
and prints the wall times and speed-ups against the first. docs/SCALING.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "in-process, 1 thread": [],
    "in-process, 2 threads": ["--threads", "2"],
    "--workers 2 (1 thread each)": ["--workers", "2"],
    "--executor ray, 2 CPUs": ["--executor", "ray", "--workers", "2"],
}


def numbers(store: Path) -> dict:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return {p.name: strip(json.loads(p.read_text())["result"]) for p in store.glob("*/*.json")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "benchmarks" / "sweep-bench.toml"))
    parser.add_argument("--json", default=None, help="write the timings as JSON")
    args = parser.parse_args()
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, extra) in enumerate(CONFIGS.items()):
            store = Path(tmp) / f"store{i}"
            summary = Path(tmp) / f"summary{i}.json"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "prunelens.analysis.cli", "sweep", args.spec, "--store", str(store),
                            "--quiet", "--json", str(summary), *extra], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            tasks = json.loads(summary.read_text())["tasks"]
            compute = sum(t["seconds"] for t in tasks)  # inside the workers, loading excluded
            got = numbers(store)
            same = None if reference is None else got == reference
            reference = reference or got
            rows.append({"config": label, "seconds": round(seconds, 1), "entries": len(got),
                         "task_seconds": round(compute, 1), "same_numbers_as_first": same})
            print(f"{label:<30} {seconds:7.1f} s  (tasks {compute:6.1f} s)  {len(got)} entries"
                  + ("" if same is None else f"  same numbers: {same}"), flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"], 2)
        print(f"{row['config']:<30} speed-up {row['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
