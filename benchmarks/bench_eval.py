"""Print the prunelens benchmark table (ratios against the naive loop) and write its JSON.

    python benchmarks/bench_eval.py [--model default] [--data default] [--limit N] [--quick]
        [--threads 2] [--json bench.json]

The same suite as ``prunelens bench`` (analysis/bench.py); see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prunelens.analysis.bench import format_table, run_bench
from benchmarks.common import open_from, session_parser


def main() -> None:
    parser = session_parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    session = open_from(args)
    out = run_bench(session, quick=args.quick, threads=args.threads, progress=lambda m: None,
                    specs=(args.model, args.data, args.limit))
    print(format_table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
