"""The layers of docs/ARCHITECTURE.md, enforced on every import (function-level ones too):
a module imports only from its own layer or the layers before it; ``analysis/`` never imports
``dashboard`` or streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    ("core", {"errors", "json_outputs", "plugins", "files", "model_bounds", "hub", "checkpoints", "fingerprints", "store_schema", "cache", "models",
              "data", "layout", "shared_layers", "hooks", "gates", "patterns", "precision", "run_result", "pruned_folder", "slicing", "timing",
              "objectives", "eval_results"}),
    ("engine", {"fastpath", "kernels", "prefix", "checked_path", "evaluate", "pruning", "spectral", "attention", "finetune"}),
    ("session", {"session", "batches"}),
    ("methods", {"methods"}),
    ("operations", {"operations", "training", "spectral_store", "compare", "flips", "precompute", "analyze", "export",
                    "bench", "sweep", "families_doc"}),
    ("interfaces", {"cli", "cli_parser", "cli_args", "cli_commands", "__main__"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
# exceptions to the layering: none (models -> export went when the pruned-folder format moved to
# core, analysis/pruned_folder.py); a new one fails the test
KNOWN: set[tuple[str, str]] = set()


def _top(module: str) -> str:
    """``prunelens.analysis.methods.pins`` -> ``methods``; ``prunelens.analysis.cache`` -> ``cache``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every module a file imports, ``prunelens.`` left off (``prunelens.analysis.cache`` ->
    ``analysis.cache``); a bare ``analysis``/``dashboard`` import is kept as written so the namespace
    test below can see it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name.removeprefix("prunelens.") if name.startswith("prunelens.") else
            ("bare:" + name if name.split(".")[0] in ("analysis", "dashboard") else name) for name in found}


def _modules():
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name == "analysis":
            continue
        yield _top(".".join(path.relative_to(ROOT).with_suffix("").parts)), path


def test_every_analysis_module_has_a_layer():
    missing = sorted({name for name, _ in _modules()} - set(RANK))
    assert not missing, f"add these modules to a layer in docs/ARCHITECTURE.md and here: {missing}"


@pytest.mark.parametrize("name, path", list(_modules()), ids=[str(p.relative_to(ROOT)) for _, p in _modules()])
def test_imports_point_down_or_sideways(name, path):
    for module in _imports(path):
        assert not module.startswith(("dashboard", "streamlit")), f"{path.name} imports {module}"
        if not module.startswith("analysis.") or not _top(module):
            continue
        target = _top(module)
        if target in RANK and RANK[target] > RANK[name]:
            assert (name, target) in KNOWN, (f"{path.relative_to(ROOT)} ({LAYERS[RANK[name]][0]}) imports "
                                             f"{module} ({LAYERS[RANK[target]][0]}), a later layer")


def test_the_checker_sees_a_violation(tmp_path):
    """The scan finds function-level imports (a test that cannot fail would prove nothing)."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from prunelens.analysis.operations import prune\n")
    assert "analysis.operations" in _imports(bad)
    assert RANK["operations"] > RANK["methods"]


def test_every_import_goes_through_the_prunelens_namespace():
    """``import analysis``/``import dashboard`` would pick up a user's own analysis.py or
    dashboard.py from the working folder (issue 31): the code imports ``prunelens.*`` only."""
    bare = [(str(path.relative_to(ROOT)), module)
            for folder in ("analysis", "dashboard", "tests", "scripts", "benchmarks")
            for path in sorted((ROOT / folder).rglob("*.py"))
            for module in _imports(path) if module.startswith("bare:")]
    assert not bare, bare
