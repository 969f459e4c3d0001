"""The argparse side of ``prunelens``: every subcommand's flags (``build_parser``), its help
text (description, examples, ``EXIT_CODES``; ``HELP``), the help formatter, the method names
``--help`` reads from the registry, and the parser whose errors are one ``error:`` line with exit
code 2. It parses only: which function runs a subcommand is :data:`prunelens.analysis.cli.COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from prunelens.analysis.cli_args import FINETUNE_OUT
from prunelens.analysis.objectives import OBJECTIVES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its flags and help; ``args.command`` names the one given."""
    common = _Parser(add_help=False)
    common.add_argument("--model", default="default", help="default, a local folder, or a hub id")
    common.add_argument("--data", default="default", help="default (Rotten Tomatoes), glue:<task>, or a CSV/JSONL path")
    common.add_argument("--limit", type=int, default=None, help="evaluate on the first N examples only")
    common.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    common.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="what pruning is measured against: labels (gold labels), agreement (the "
                             "unpruned model's predictions, no labels needed) or embedding (a headless "
                             "encoder's sentence vectors); default: labels for a classifier on labelled "
                             "data, agreement without labels, embedding for a headless encoder")

    parser = _Parser(prog="prunelens", description="Which heads and modules of a BERT encoder matter?")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("dashboard", help="start the dashboard (localhost only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default localhost only)")
    p.add_argument("--online", action="store_true",
                   help="let hub ids and GLUE tasks download (default: local caches only)")
    p.add_argument("--data-root", action="append", metavar="DIR",
                   help="a folder whose data files and model folders the dashboard may open "
                        "(repeatable; default: the folder it is started in)")
    p.add_argument("--debug", action="store_true")

    p = sub.add_parser("methods", help="methods, units and declared parameters")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--debug", action="store_true")

    p = sub.add_parser("score", parents=[common], help="importance scores of one method")
    p.add_argument("--method", required=True)
    p.add_argument("--unit", default=None, help="head, attention, ffn or neuron")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-cache", action="store_true", help="recompute, do not read or write the store")

    p = sub.add_parser("prune", parents=[common], help="prune by a method's scores and evaluate")
    p.add_argument("--method", required=True)
    p.add_argument("--sparsity", type=float, default=None, help="fraction of units removed, in [0, 1)")
    p.add_argument("--threshold", type=float, default=None, help="remove units scoring below this")
    p.add_argument("--unit", default=None)
    p.add_argument("--scope", choices=("global", "layer"), default=None)
    p.add_argument("--keep-one-per-layer", action="store_true")
    p.add_argument("--physical", action="store_true", help="also slice the weights and compare")
    p.add_argument("--param", action="append", metavar="NAME=VALUE")

    p = sub.add_parser("export", parents=[common], help="write the physically pruned model (+ ONNX)")
    p.add_argument("--method", required=True)
    p.add_argument("--sparsity", type=float, required=True, help="fraction of units removed, in [0, 1)")
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export)")
    p.add_argument("--unit", default=None, help="head, attention, ffn or neuron")
    p.add_argument("--scope", choices=("global", "layer"), default=None)
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-onnx", action="store_true", help="only the prunelens-loadable weights")

    p = sub.add_parser("curve", parents=[common], help="accuracy/loss vs sparsity for several methods")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--sparsities", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--unit", default="head")
    p.add_argument("--scope", choices=("global", "layer"), default="global")
    p.add_argument("--csv", default=None, metavar="FILE")

    p = sub.add_parser("train", parents=[common], help="a method's training mode (train --help lists them), cached")
    p.add_argument("--method", required=True)
    p.add_argument("--param", action="append", metavar="NAME=VALUE")
    p.add_argument("--no-cache", action="store_true")

    p = sub.add_parser("precompute", parents=[common], help="fill the store for a model/data pair")
    p.add_argument("--out", default=None, help="store folder to write (default: the user store)")
    p.add_argument("--methods", default=None, help="comma-separated subset of methods")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--head-scopes", default=None, metavar="SCOPES",
                   help="head curves' scopes, e.g. global (default: global,layer)")
    p.add_argument("--curve-step", type=float, default=None, metavar="S",
                   help="head curves at 0, S, 2S, ... (default: the Prune slider's 0.05 grid)")

    p = sub.add_parser("analyze", parents=[common],
                       help="fill the store for a new model/data pair: every page then answers at once")
    p.add_argument("--methods", default=None, help="comma-separated subset of methods (default: all)")
    p.add_argument("--train", action="store_true", help="also run every training mode (long)")
    p.add_argument("--store", default=None, help="store folder to fill (default: the user store)")
    p.add_argument("--dry-run", action="store_true", help="plan and estimate, compute nothing")
    p.add_argument("--head-scopes", default=None, metavar="SCOPES",
                   help="head curves' scopes, e.g. global (default: global,layer)")
    p.add_argument("--curve-step", type=float, default=None, metavar="S",
                   help="head curves at 0, S, 2S, ... (default: the Prune slider's 0.05 grid)")

    p = sub.add_parser("bench", parents=[common], help="benchmark suite (ratios against a naive loop)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--skip-ablation", action="store_true",
                   help="leave out the leave-one-out ablation of every head (the longest figure)")

    p = sub.add_parser("sweep", help="run a grid of analyses and training runs (docs/SWEEPS.md)")
    p.add_argument("spec", help="a sweep spec (.toml), e.g. examples/sweep-small.toml")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine (--workers N processes); ray: a Ray cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="local: parallel processes (default 1, in this process); ray: CPUs of a "
                        "locally started cluster (default all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per task (default 1: the same numbers under every executor)")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, or host:port)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (CUDA when present)")
    p.add_argument("--gpus-per-task", type=float, default=1.0, help="Ray: GPUs per task on CUDA")
    p.add_argument("--store", default=None, help="store folder to fill (default: the user store)")
    p.add_argument("--dry-run", action="store_true", help="list the entries, compute nothing")
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")

    p = sub.add_parser("finetune", help="rebuild the default checkpoint")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None,
                   help=f"folder to write (default: ./{FINETUNE_OUT}; never the shipped checkpoint)")
    p.add_argument("--overwrite-shipped", action="store_true",
                   help="write into the shipped analysis/default_checkpoint/ (orphans every shipped "
                        "result unless the retrain is bit-identical)")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--debug", action="store_true")
    _document(parser, sub)
    return parser


# ---------------------------------------------------------------------------------------------
# help: what each subcommand does, examples, exit codes, the registry's method names

EXIT_CODES = """exit codes:
  0  done
  2  a bad argument or input (one `error:` line; nothing was computed)
  3  partial: some tasks failed after a retry, every other result was kept (sweep, analyze,
     precompute); rerun the same command to retry them
  1  an internal error (a bug: rerun with --debug and report it); 130 interrupted"""


HELP = {  # subcommand: (description, examples)
    "dashboard": ("Start the dashboard on this machine (http://127.0.0.1:8501). Offline unless "
                  "--online; the File path choices read only inside the data roots.",
                  ["prunelens dashboard --port 8502", "prunelens dashboard --data-root ~/data"]),
    "methods": ("List every method (built in and installed plug-ins), the units it scores and "
                "its declared parameters.", ["prunelens methods", "prunelens methods --json m.json"]),
    "score": ("Importance scores of one method for one unit (higher = more important), from the "
              "store when present.",
              ["prunelens score --method michel --json s.json",
               "prunelens score --method snip --unit ffn --param relative=true"]),
    "prune": ("Remove the lowest-scoring units (a sparsity or a threshold) and evaluate the "
              "pruned model against the unpruned one.",
              ["prunelens prune --method michel --sparsity 0.5",
               "prunelens prune --method magnitude --sparsity 0.3 --unit ffn --physical"]),
    "export": ("Write the physically pruned model (loadable with --model DIR) and, unless "
               "--no-onnx, an ONNX file timed in onnxruntime.",
               ["prunelens export --method michel --sparsity 0.5 --out pruned/"]),
    "curve": ("Accuracy, loss and margin against sparsity for several methods.",
              ["prunelens curve --methods michel,snip,random --sparsities 0,0.4,0.8 --csv c.csv"]),
    "train": ("Run (or read from the store) one training run of a method's training mode; "
              "--method takes the training modes listed under options.",
              ["prunelens train --method admm", "prunelens train --method pins --param seed=1"]),
    "precompute": ("Fill a store folder for a model/data pair: analyze plus every training mode "
                   "(what ships in cached_results/ for the default).",
                   ["prunelens precompute --out cached_results"]),
    "analyze": ("Fill the store for a model/data pair as one resumable job: an estimate first, "
                "the cheapest method first; rerun to continue.",
                ["prunelens analyze --model ~/my-bert --data dev.csv",
                 "prunelens analyze --model ~/my-bert --data dev.csv --dry-run"]),
    "sweep": ("Run a grid of analyses and training runs from a TOML spec (docs/SWEEPS.md), "
              "here, in local processes or on Ray.",
              ["prunelens sweep examples/sweep-small.toml",
               "prunelens sweep spec.toml --workers 2"]),
    "bench": ("Time evaluation, scoring and the slider as ratios against a naive loop "
              "(docs/PERFORMANCE.md).", ["prunelens bench --quick --json bench.json"]),
    "finetune": ("Rebuild the embedded default checkpoint with the recipe of analysis/finetune.py.",
                 ["prunelens finetune --out /tmp/checkpoint"]),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped without breaking a method name
    at its hyphen (``admm-quant``)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _MethodNames:
    """The registry's method names (or training modes), read when --help shows them: building
    the parser imports no method. Validation stays with ``get_method``/``get_trainer``, whose
    messages say what to choose."""

    def __init__(self, training: bool = False) -> None:
        self.training = training

    def _names(self) -> list[str]:
        from prunelens.analysis.methods import all_methods

        return [n for n, m in all_methods().items() if not self.training or m.trainer is not None]

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()


def _document(parser: argparse.ArgumentParser, sub) -> None:
    """Descriptions, examples and exit codes for every subcommand; ``--method``'s choices."""
    from prunelens import __version__

    parser.add_argument("--version", action="version", version=f"prunelens {__version__}")
    parser.formatter_class = _HelpFormatter
    parser.epilog = ("run `prunelens COMMAND --help` for a command's options and examples\n\n"
                     + EXIT_CODES)
    for name, child in sub.choices.items():
        description, examples = HELP[name]
        child.description = textwrap.fill(description, 92)
        child.formatter_class = _HelpFormatter
        child.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES
        for action in child._actions:
            if action.dest == "method":
                action.choices = _MethodNames(training=name == "train")
                action.metavar = "MODE" if name == "train" else "METHOD"
                action.help = ("training mode: %(choices)s" if name == "train"
                               else "one of: %(choices)s")
            elif action.dest == "param" and action.help is None:
                action.help = "a declared parameter, repeatable (`prunelens methods` lists them)"


def _skip_registry_check(parser_check):
    """argparse's own choices check, except for method names (``get_method`` words that error)."""
    def check(self, action, value):
        if isinstance(action.choices, _MethodNames):
            return None
        return parser_check(self, action, value)
    return check


_Parser._check_value = _skip_registry_check(argparse.ArgumentParser._check_value)
