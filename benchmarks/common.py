"""What every benchmark script shares: the model/data/limit/threads options, the session, and
the printed table of an interleaved run with its JSON.

The scripts put the repository root on ``sys.path`` and import this as ``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from prunelens.analysis.operations import open_session

from prunelens.analysis.session import Session


def session_parser(doc: str, limit: int | None = None, threads: int = 2) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line, with --model, --data, --limit and --threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="default")
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--threads", type=int, default=threads)
    return parser


def open_from(args: argparse.Namespace) -> Session:
    """Set torch's thread count from ``args`` and open their model and data."""
    torch.set_num_threads(args.threads)
    return open_session(args.model, args.data, args.limit)


def report(rows: list[dict], columns: list[tuple[str, str, str]], loads: list[float],
           json_path: Path | None, **meta) -> None:
    """Print ``rows`` as a table (``columns``: key, header and format spec of each value; text
    left-aligned, numbers right), then the load average per round; write ``{**meta, "loads", "rows"}`` to
    ``json_path`` when given."""
    widths = [max([len(header), *(len(format(row[key], spec)) for row in rows)])
              for key, header, spec in columns]
    align = ["<" if not spec else ">" for _, _, spec in columns]  # text left, numbers right
    print(" ".join(f"{header:{a}{w}}" for (_, header, _), a, w in zip(columns, align, widths)))
    for row in rows:
        print(" ".join(f"{format(row[key], spec):{a}{w}}" for (key, _, spec), a, w in zip(columns, align, widths)))
    print(f"load average (1 min) per round: {[round(x, 1) for x in loads]}")
    if json_path:
        json_path.write_text(json.dumps({**meta, "loads": loads, "rows": rows}, indent=2) + "\n")
