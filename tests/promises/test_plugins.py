"""Plug-ins from installed packages (analysis/plugins.py, docs/PLUGINS.md): the example package
under examples/ installs, its method shows up in ``prunelens methods`` and passes the same
contract tests as a built-in method; a broken or clashing plug-in is left out with a warning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunelens.analysis.plugins import FAMILIES_GROUP, PluginWarning, load_group

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prunelens-plugin-example"


@pytest.fixture(scope="module")
def plugin_target(tmp_path_factory) -> Path:
    """The example plug-in installed (not editable, nothing downloaded) into a folder of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(EXAMPLE, work / "src")  # its build leaves nothing in the checkout
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return target


def _env(target: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}


def test_an_installed_plugin_method_is_listed(plugin_target, tmp_path):
    out = tmp_path / "m.json"
    done = subprocess.run([sys.executable, "-m", "prunelens", "methods", "--json", str(out)], cwd=ROOT,
                          env=_env(plugin_target), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    methods = {m["name"]: m for m in json.loads(out.read_text())["methods"]}
    assert methods["l1-norm"]["units"] == ["head", "attention", "ffn", "neuron"]
    assert [p["name"] for p in methods["l1-norm"]["params"]] == ["mean"]
    assert "magnitude" in methods and "warning" not in done.stderr
    # without the plug-in on the path it is absent: the listing comes from the entry point
    alone = subprocess.run([sys.executable, "-m", "prunelens", "methods"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "l1-norm" not in alone.stdout


def test_an_installed_plugin_method_passes_the_method_contract(plugin_target):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/unit/test_method_contract.py", "-k", "l1-norm"], cwd=ROOT,
                          env=_env(plugin_target), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    # per unit: shape and seeding, the store round trip; and the parameter round trip
    last = done.stdout.splitlines()[-1]
    assert int(last.split(" passed")[0].split()[-1]) >= 2 * 4 + 1 and "failed" not in last, last


def _fake_distribution(folder: Path, group: str, entries: dict[str, str], name: str, module: str) -> None:
    """An installed distribution (a dist-info folder) with entry points, and its module ``name``
    (a name of its own per test: an imported module stays in sys.modules)."""
    info = folder / "fake_plugins-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    lines = [f"[{group}]", *(f"{name} = {value}" for name, value in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.py").write_text(textwrap.dedent(module))


def test_a_broken_or_clashing_plugin_is_left_out_with_a_warning(tmp_path, monkeypatch):
    from prunelens.analysis.methods import all_methods, _plugin_methods

    _fake_distribution(tmp_path, "prunelens.methods", {
        "magnitude": "fake_methods:CLASH", "broken": "fake_methods_missing:METHOD",
        "not-a-method": "fake_methods:TEXT", "renamed": "fake_methods:CLASH",
    }, "fake_methods", """
        from prunelens.analysis.methods import get_method
        CLASH = get_method("magnitude")
        TEXT = "a string"
    """)
    builtin = set(all_methods())
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning) as caught:
        found = _plugin_methods(builtin)
    assert found == {}
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 4
    assert any("'broken'" in s and "failed to load: ModuleNotFoundError" in s for s in said)
    assert any("'magnitude'" in s and "the name is already taken" in s for s in said)
    assert any("'not-a-method'" in s and "names a str, not a prunelens Method instance" in s for s in said)
    assert any("'renamed'" in s and "called 'renamed' but the method 'magnitude'" in s for s in said)


def test_the_families_hook_loads_what_the_group_declares(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, FAMILIES_GROUP, {"toy": "fake_families:FAMILY"}, "fake_families",
                       "FAMILY = {'model_type': 'toy'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_group(FAMILIES_GROUP, lambda name, obj: None) == {"toy": {"model_type": "toy"}}
    with pytest.warns(PluginWarning, match="left out: not a family"):
        assert load_group(FAMILIES_GROUP, lambda name, obj: "not a family") == {}


def test_a_plugin_that_asks_for_a_method_while_it_is_imported_gets_the_built_in_ones(tmp_path):
    # old: get_method from a plug-in's import, during the registry's first fill, waited forever
    # for the registry's lock (held by the fill that was importing it)
    _fake_distribution(tmp_path, "prunelens.methods", {"magnitude-copy": "fake_copy:COPY"}, "fake_copy", """
        import dataclasses
        from prunelens.analysis.methods import get_method
        COPY = dataclasses.replace(get_method("magnitude"), name="magnitude-copy")
    """)
    done = subprocess.run([sys.executable, "-m", "prunelens", "methods"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "magnitude-copy" in done.stdout and "warning" not in done.stderr


def test_an_installed_family_joins_the_layout_registry(tmp_path):
    """A ``prunelens.families`` entry point adds its Family to layout's registry (model types,
    layer classes); a clash, a misnamed entry or another kind of object is left out with a
    warning."""
    _fake_distribution(tmp_path, FAMILIES_GROUP, {
        "toy": "fake_layout:TOY", "bert-again": "fake_layout:CLASH", "misnamed": "fake_layout:TOY",
        "text": "fake_layout:TEXT",
    }, "fake_layout", """
        import dataclasses
        from prunelens.analysis.layout import FAMILIES
        TOY = dataclasses.replace(FAMILIES["bert"], name="toy", model_types=("toy",), layer_classes=("ToyLayer",))
        CLASH = dataclasses.replace(FAMILIES["bert"], name="bert-again", layer_classes=("OtherLayer",))
        TEXT = "a string"
    """)
    probe = ("import warnings; warnings.simplefilter('always')\n"
             "from prunelens.analysis import layout\n"
             "print(layout.family_for_type('toy').name, 'toy' in layout.SUPPORTED_TYPES, sorted(layout.FAMILIES))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["toy", "True"]
    assert "'bert-again'" not in done.stdout and "'misnamed'" not in done.stdout
    assert "'bert-again'" in done.stderr and "bert, camembert, electra, roberta, xlm-roberta already belong to another family" in done.stderr
    assert "is called 'misnamed' but the family 'toy'" in done.stderr
    assert "names a str, not a prunelens.analysis.layout.Family" in done.stderr
