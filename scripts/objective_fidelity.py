"""docs/FIDELITY.md's section "Label-free pruning: how far agreement can stand in for labels".

On the embedded default (fine-tuned MiniLM-L6, Rotten Tomatoes dev), for each method whose
importance reads the loss (michel, ablation, pins, platon): the Spearman correlation between its
head ranking under the ``labels`` objective and under ``agreement`` (no labels: the unpruned
model's own predictions as the target); and, at 0-90% of heads removed, the accuracy of the
model pruned with label-scored heads, the accuracy of the model pruned with agreement-scored heads
(label-free pruning, judged with the labels it never saw) and the agreement the label-free
pipeline itself reports. Everything is read from, or written to, the result store.

    python scripts/objective_fidelity.py [--doc docs/FIDELITY.md]

replaces the section between its markers in the document (or appends it); scripts/fidelity.py
includes the same section when it writes the whole document.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prunelens.analysis.objectives import EXPLAINED  # noqa: E402
from prunelens.analysis.operations import compute_scores, evaluate_mask, mask_for, open_session  # noqa: E402

BEGIN = "<!-- objectives: begin (scripts/objective_fidelity.py) -->"
END = "<!-- objectives: end -->"
# the methods whose importance reads the objective's loss; every other method's scores are computed
# without labels (weights, function norms, representation similarities): identical under both
LOSS_METHODS = ("michel", "ablation", "pins", "platon")
CURVE_METHODS = ("michel", "ablation")
SPARSITIES = tuple(round(0.1 * i, 1) for i in range(10))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def section(labels_session=None) -> list[str]:
    """The section's markdown lines (between its markers)."""
    from scipy.stats import spearmanr

    start = time.time()
    labels = labels_session or open_session("default", "default")
    agreement = open_session("default", "default", loaded=labels.loaded, store=labels.store,
                             objective="agreement")
    rows = []
    scores = {}
    for name in LOSS_METHODS:
        by_labels = compute_scores(labels, name, "head").scores
        by_agreement = compute_scores(agreement, name, "head").scores
        scores[name] = (by_labels, by_agreement)
        rho = spearmanr(by_labels.ravel(), by_agreement.ravel()).statistic
        top = int(np.sum(mask_for(by_labels, 0.5) * mask_for(by_agreement, 0.5)))
        rows.append([name, f"{rho:+.2f}", f"{top} of 36"])
    curve_rows = []
    for name in CURVE_METHODS:
        by_labels, by_agreement = scores[name]
        for sparsity in SPARSITIES:
            with_labels, _ = evaluate_mask(labels, "head", mask_for(by_labels, sparsity))
            label_free_mask = mask_for(by_agreement, sparsity)
            judged, _ = evaluate_mask(labels, "head", label_free_mask)
            reported, _ = evaluate_mask(agreement, "head", label_free_mask)
            curve_rows.append([name, f"{sparsity:.0%}", f"{with_labels['pruned']['accuracy']:.3f}",
                               f"{judged['pruned']['accuracy']:.3f}", f"{reported['pruned']['accuracy']:.3f}"])
    base = labels.evaluator.base
    return [
        BEGIN,
        "## Label-free pruning: how far agreement can stand in for labels",
        "",
        "The `agreement` objective (`--objective agreement`, the default on data without labels) "
        "measures a pruned classifier against the unpruned one instead of against gold labels. "
        + EXPLAINED["agreement"] + " On the default (unpruned accuracy "
        f"{base.accuracy:.3f}), the methods whose importance reads the loss rank heads as follows under "
        "each objective (their gradient methods use cross-entropy against the unpruned model's top class, "
        "ablation the KL divergence; every other method never reads labels, so its ranking is the same "
        "under both by construction):",
        "",
        *_table(["method", "Spearman ρ, labels vs agreement ranking (72 heads)",
                 "heads kept at 50% by both"], rows),
        "",
        "Pruning heads globally by each ranking: the accuracy of the label-scored model, the accuracy of "
        "the agreement-scored (label-free) model judged with the gold labels it never saw, and the "
        "agreement the label-free pipeline reports about itself:",
        "",
        *_table(["method", "heads removed", "accuracy (labels)", "accuracy (label-free)",
                 "agreement (label-free)"], curve_rows),
        "",
        "Read: where the two accuracies match, label-free pruning can be trusted. Agreement itself "
        "falls faster than accuracy (it counts every changed prediction, while accuracy nets changes "
        "to a wrong class against changes to the right one), so as a stopping rule it is conservative.",
        "",
        f"_Section generated by `scripts/objective_fidelity.py` in {time.time() - start:.0f} s._",
        END,
    ]


def replace_section(text: str, lines: list[str]) -> str:
    """``text`` with the section between the markers replaced (appended when absent)."""
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default=str(ROOT / "docs" / "FIDELITY.md"))
    args = parser.parse_args()
    doc = Path(args.doc)
    doc.write_text(replace_section(doc.read_text() if doc.exists() else "", section()))
    print(f"wrote the objectives section of {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
