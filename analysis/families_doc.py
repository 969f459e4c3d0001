"""The families × capabilities table of README.md, generated from the family registry
(:data:`prunelens.analysis.layout.FAMILIES`) and the method registry — one owner for what each
family can do, so the README cannot drift from the code (a test compares them).

``python -m prunelens.analysis.families_doc`` rewrites the table in README.md between its markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunelens.analysis.layout import FAMILIES, Family

START, END = "<!-- families:start (generated: python -m prunelens.analysis.families_doc) -->", "<!-- families:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def _physical(family: Family) -> str:
    return "heads every shared depth removes; the rest gated" if family.shared_layers else "yes"


def _onnx(family: Family) -> str:
    return "yes (per-depth gates kept in the manifest)" if family.shared_layers else "yes"


def _attention_view(family: Family) -> str:
    if family.name == "bert":
        return "yes (Q·K recomputed from hooks)"
    return "yes (eager private copy)" if family.sdpa else "yes (the model's eager attention)"


def capabilities_table() -> str:
    """Markdown: one row per family — model types, methods, fast path, physical pruning, ONNX
    export, attention view, and the layout notes."""
    from prunelens.analysis.methods import all_methods

    methods = len(all_methods())
    rows = ["| family | config `model_type` | methods | fast path | physical pruning | export + ONNX "
            "| attention view | layout |",
            "|---|---|---|---|---|---|---|---|"]
    for f in FAMILIES.values():
        fast = "yes" if f.fast_path else "reference path (HF forward + gates)"
        layout = f"{'pre' if f.norm == 'pre' else 'post'}-LN; {f.notes}"
        rows.append(f"| {f.name} | {', '.join(f.model_types)} | all {methods} | {fast} | {_physical(f)} "
                    f"| {_onnx(f)} | {_attention_view(f)} | {layout} |")
    return "\n".join(rows)


def readme_block() -> str:
    return f"{START}\n{capabilities_table()}\n{END}"


def current_readme_block(text: str) -> str | None:
    if START not in text or END not in text:
        return None
    return text[text.index(START):text.index(END) + len(END)]


def write_readme(path: Path = README) -> bool:
    """Replace the README's table by the generated one; True when it changed."""
    text = path.read_text(encoding="utf-8")
    old = current_readme_block(text)
    if old is None:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    new = text.replace(old, readme_block())
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("README.md updated" if write_readme() else "README.md already current", file=sys.stderr)
