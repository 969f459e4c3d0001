"""prunelens as a Python package: the version in one place, a working folder that cannot shadow
the package, and a wheel that carries the shipped store and the default checkpoint."""

from __future__ import annotations

import asyncio
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.browser_util import free_port
from tests.promises.test_concurrency import StreamlitClient

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# the `prunelens` console script, as pip writes it, run with the working folder first on the path
# (python -c puts it there; a console script would not, so this is the stricter case)
CLI = [sys.executable, "-c", "import sys; from prunelens.analysis.cli import main; sys.exit(main())"]


def test_the_version_is_written_once_and_reported():
    import prunelens

    version = PYPROJECT["project"]["version"]
    assert prunelens.__version__ == version
    done = subprocess.run([*CLI, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"prunelens {version}"
    # nowhere else: no module writes it a second time
    written = [p for p in [*(ROOT / "analysis").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py"),
                           *(ROOT / "prunelens").rglob("*.py")] if f'"{version}"' in p.read_text()]
    assert written == []
    assert PYPROJECT["project"]["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert all(f"## {v}" in changelog for v in ("0.3", "0.2", "0.1"))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(folders: list[str]) -> dict[str, str]:
    """Top-level module -> a file importing it, for every absolute import under ``folders``
    that is neither the standard library nor prunelens."""
    found = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("prunelens", "tests", "__future__"):
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("folders, extras", [
    (["analysis", "dashboard", "prunelens"], ("export", "ray")),  # optional features' extras
    (["tests"], ("test", "export", "ray")),
])
def test_every_imported_package_is_declared(folders, extras):
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    project = PYPROJECT["project"]
    declared = {_canonical(Requirement(r).name) for r in project["dependencies"]}
    for extra in extras:
        declared |= {_canonical(Requirement(r).name) for r in project["optional-dependencies"][extra]}
    owners = packages_distributions()
    undeclared = {module: where for module, where in _third_party_imports(folders).items()
                  if not {_canonical(d) for d in owners.get(module, [module])} & declared}
    assert undeclared == {}


SHADOWS = {name: f"open({{marker!r}}, 'w').write({name!r})\nraise SystemExit('{name}.py of the working folder ran')\n"
           for name in ("dashboard", "analysis")}


def _shadowing_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A working folder holding a dashboard.py and an analysis.py that leave a mark and raise."""
    folder, marker = tmp_path / "work", tmp_path / "shadow-ran"
    folder.mkdir()
    for name, text in SHADOWS.items():
        (folder / f"{name}.py").write_text(text.format(marker=str(marker)))
    return folder, marker


def test_a_working_folder_with_dashboard_py_and_analysis_py_cannot_shadow_the_package(
        tmp_path, tiny_bert_dir, tiny_csv):
    folder, marker = _shadowing_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRUNELENS_CACHE": str(tmp_path / "store")}
    done = subprocess.run([*CLI, "methods"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "magnitude" in done.stdout and not marker.exists()

    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([*CLI, "dashboard", "--port", str(port)], cwd=folder, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        status, deadline = None, time.monotonic() + 60
        while status != 200:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no answer in 60 s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    status = resp.status
            except OSError:
                time.sleep(0.3)

        async def one_run():  # a session: the app script runs (its imports included)
            async with StreamlitClient(port, timeout=120) as client:
                return await client.run({"model": str(tiny_bert_dir), "data": str(tiny_csv)})

        page = asyncio.run(one_run())
        assert page.elements and not page.of("exception"), log.read_text()
        assert not marker.exists(), log.read_text()
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.slow
def test_the_wheel_carries_the_store_and_the_default_checkpoint(tmp_path):
    """Build the wheel, install it (no editable path, nothing downloaded) into a fresh venv that
    sees this interpreter's packages, and open the default from the store inside it."""
    wheels = tmp_path / "wheels"
    source = shutil.copytree(ROOT, tmp_path / "source", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".*_cache"))  # no stale build/
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(wheels)], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    wheel = next(wheels.glob("prunelens-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    manifest = json.loads(zipfile.ZipFile(wheel).read("prunelens/cached_results/manifest.json"))
    shipped = {n for n in names if n.startswith("prunelens/cached_results/") and not n.endswith("manifest.json")}
    assert len(shipped) == len(manifest["entries"]) > 100  # every listed entry, nothing else
    assert "prunelens/analysis/default_checkpoint/finetuned.safetensors" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",  # pip >= 22.3
                    "--no-index", "-q", str(wheel)], check=True, timeout=300)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PRUNELENS_CACHE=str(tmp_path / "empty-store"), HF_HUB_OFFLINE="1",
               PRUNELENS_SECRET_FILE=str(tmp_path / "secret" / "key"))
    where = subprocess.run([str(python), "-I", "-c", "import prunelens, prunelens.analysis.cache as c; "
                            "print(prunelens.__file__); print(c.SHIPPED_DIR); print(prunelens.__version__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120, check=True)
    package_file, shipped_dir, version = where.stdout.split()
    assert Path(package_file).is_relative_to(env_dir) and Path(shipped_dir).is_relative_to(env_dir)
    assert not Path(package_file).is_relative_to(ROOT) and version == PYPROJECT["project"]["version"]
    out = tmp_path / "s.json"
    done = subprocess.run([str(python), "-I", "-m", "prunelens", "score", "--method", "magnitude",
                           "--quiet", "--json", str(out)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["cached"] is True and result["model"]["name"] == "default"
    assert len(result["scores"]) == 6 and len(result["scores"][0]) == 12

