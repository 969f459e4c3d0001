"""What every benchmark script shares: the model/data/limit/threads options and the session.

The scripts put the repository root on ``sys.path`` and import this as ``benchmarks.common``.
"""

from __future__ import annotations

import argparse

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
