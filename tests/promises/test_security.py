"""Security promises (SECURITY.md lists each with the test here that holds it).

Untrusted model folders never run code (safetensors or ``weights_only`` loading,
``trust_remote_code=False``), data files are size-capped, store file names are hex digests,
the server binds to localhost by default, and no source file evaluates or unpickles input.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest

from prunelens.analysis.errors import DataError, ModelError

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("analysis", "dashboard", "benchmarks")


def _sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 10
    return files


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    """Dotted name of a call target: ``torch.load``, ``AutoModel.from_pretrained``, ``eval``."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "()")  # ().eval is a method call
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


# ---------------------------------------------------------------------------------------------
# 1. weights: safetensors, or weights_only torch loading; a pickle never runs


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _folder_with_pickle(src: Path, dst: Path, marker: Path, keep_safetensors: bool) -> Path:
    shutil.copytree(src, dst, ignore=None if keep_safetensors else shutil.ignore_patterns("*.safetensors"))
    with open(dst / "pytorch_model.bin", "wb") as f:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _Evil(marker)}, f)
    return dst


def test_pickle_weights_are_refused(tiny_bert_dir, tmp_path):
    from prunelens.analysis.models import load_model

    marker = tmp_path / "RAN"
    folder = _folder_with_pickle(tiny_bert_dir, tmp_path / "m", marker, keep_safetensors=False)
    with pytest.raises(ModelError, match="Weights only load failed"):
        load_model(str(folder))
    assert not marker.exists()


def test_safetensors_preferred_over_pickle(tiny_bert_dir, tiny_loaded, tmp_path):
    """With both files present the safetensors weights are loaded and the pickle is never opened."""
    from prunelens.analysis.models import load_model

    marker = tmp_path / "RAN"
    folder = _folder_with_pickle(tiny_bert_dir, tmp_path / "m", marker, keep_safetensors=True)
    loaded = load_model(str(folder))
    assert loaded.fingerprint == tiny_loaded.fingerprint
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in _sources():
        for call in _calls(path):
            if _name(call.func) == "torch.load" and not _is_const(
                    _keyword(call, "weights_only"), True):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
            if _name(call.func).endswith("from_pretrained"):
                wo = _keyword(call, "weights_only")
                if wo is not None and not _is_const(wo, True):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} weights_only")
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# 2. trust_remote_code=False everywhere; custom code in a model folder never runs


def test_every_from_pretrained_refuses_remote_code():
    calls, offenders = 0, []
    for path in _sources():
        for call in _calls(path):
            name = _name(call.func)
            if name.endswith(".from_pretrained") and name.split(".")[0].startswith("Auto"):
                calls += 1
                if not _is_const(_keyword(call, "trust_remote_code"), False):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
            if _is_const(_keyword(call, "trust_remote_code"), True):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} trust_remote_code=True")
    assert calls >= 4  # config, model, tokenizer in load_model; the base model in finetuning
    assert offenders == []


EVIL_PY = """
import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
class EvilConfig(BertConfig):
    model_type = "evilbert"
class EvilModel(BertForSequenceClassification):
    config_class = EvilConfig
class EvilTokenizer(BertTokenizerFast):
    pass
"""


def _folder_with_custom_code(src: Path, dst: Path, marker: Path, model_type: str) -> Path:
    shutil.copytree(src, dst)
    (dst / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig",
                       "AutoModelForSequenceClassification": "evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(cfg))
    tok_cfg_path = dst / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.exists() else {}
    tok_cfg["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    tok_cfg_path.write_text(json.dumps(tok_cfg))
    return dst


def test_custom_architecture_is_refused(tiny_bert_dir, tmp_path):
    """A config that needs its own code to load is refused, and that code never runs."""
    from prunelens.analysis.models import load_model

    marker = tmp_path / "RAN"
    folder = _folder_with_custom_code(tiny_bert_dir, tmp_path / "m", marker, "evilbert")
    with pytest.raises(ModelError, match="contains custom code"):
        load_model(str(folder))
    assert not marker.exists()


def test_auto_map_on_a_bert_is_ignored(tiny_bert_dir, tiny_loaded, tmp_path):
    """A BERT config that points at custom classes loads the stock BERT; the code never runs."""
    from transformers import BertForSequenceClassification

    from prunelens.analysis.models import load_model

    marker = tmp_path / "RAN"
    folder = _folder_with_custom_code(tiny_bert_dir, tmp_path / "m", marker, "bert")
    loaded = load_model(str(folder))
    assert type(loaded.model) is BertForSequenceClassification
    assert loaded.fingerprint == tiny_loaded.fingerprint
    assert not marker.exists()
    assert not any("evil" in name for name in sys.modules)


# ---------------------------------------------------------------------------------------------
# 3. uploads and data files are capped in size


def test_upload_cap_value_and_dashboard_flag(monkeypatch):
    import prunelens.analysis.cli
    import prunelens.analysis.data

    assert prunelens.analysis.data.MAX_UPLOAD_BYTES == 50 * 1024 * 1024
    seen = {}
    monkeypatch.setattr(prunelens.analysis.cli, "_launch", lambda cmd, env=None: seen.setdefault("cmd", cmd) and 0)
    assert prunelens.analysis.cli.main(["dashboard"]) == 0
    cmd = seen["cmd"]
    # streamlit's maxUploadSize is in MiB: the browser uploader refuses what from_bytes would
    assert int(cmd[cmd.index("--server.maxUploadSize") + 1]) == prunelens.analysis.data.MAX_UPLOAD_BYTES >> 20


def test_oversized_bytes_refused_before_parsing(monkeypatch):
    import prunelens.analysis.data

    monkeypatch.setattr(prunelens.analysis.data, "MAX_UPLOAD_BYTES", 1000)
    parsed = []
    monkeypatch.setattr(prunelens.analysis.data.pd, "read_csv", lambda *a, **k: parsed.append(1))
    with pytest.raises(DataError, match=r"big\.csv is 0 MB, over the 0 MB cap"):
        prunelens.analysis.data.from_bytes(b"text,label\n" + b"x,1\n" * 300, "big.csv")
    assert parsed == []


def test_oversized_file_refused_before_reading(tmp_path, monkeypatch):
    import prunelens.analysis.data

    path = tmp_path / "big.csv"
    path.write_bytes(b"text,label\n" + b"x,1\n" * 300)
    monkeypatch.setattr(prunelens.analysis.data, "MAX_UPLOAD_BYTES", 1000)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read a file over the cap"))
    with pytest.raises(DataError, match="over the"):
        prunelens.analysis.data.load_data(str(path))


# ---------------------------------------------------------------------------------------------
# 4. store keys are digests: no user string reaches a path


HOSTILE = ["../../../../etc/passwd", "..\\..\\windows", "/abs/path", "a/../../b", "x\x00y", "~root",
           "CON", "." * 300]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_store_paths_are_digests(hostile, tmp_path):
    from prunelens.analysis.cache import Key, ResultStore

    store = ResultStore(tmp_path / "store", shipped_dir=None)
    key = Key.make(hostile, hostile, hostile, hostile, hostile, {hostile: hostile, "p": [hostile]})
    assert store.put(key, {"v": hostile})
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    (path,) = files
    assert path.resolve().is_relative_to((tmp_path / "store").resolve())
    assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}\.json", path.relative_to(tmp_path / "store").as_posix())
    assert store.get(key) == {"v": hostile}


def test_store_digest_binds_every_field():
    from prunelens.analysis.cache import Key

    base = Key.make("m", "d", "scores", "magnitude", "head", {"seed": 1})
    variants = [Key.make("m2", "d", "scores", "magnitude", "head", {"seed": 1}),
                Key.make("m", "d2", "scores", "magnitude", "head", {"seed": 1}),
                Key.make("m", "d", "curve-point", "magnitude", "head", {"seed": 1}),
                Key.make("m", "d", "scores", "michel", "head", {"seed": 1}),
                Key.make("m", "d", "scores", "magnitude", "neuron", {"seed": 1}),
                Key.make("m", "d", "scores", "magnitude", "head", {"seed": 2})]
    digests = {base.digest, *(v.digest for v in variants)}
    assert len(digests) == 7
    assert Key.make("m", "d", "scores", "magnitude", "head", {"seed": 1}).digest == base.digest


# ---------------------------------------------------------------------------------------------
# 5. the server binds to localhost unless asked otherwise


@pytest.mark.parametrize("argv, host, port", [
    ([], "127.0.0.1", "8501"),
    (["dashboard"], "127.0.0.1", "8501"),
    (["dashboard", "--port", "9000"], "127.0.0.1", "9000"),
    (["dashboard", "--host", "0.0.0.0"], "0.0.0.0", "8501"),
    (["--port", "9001"], "127.0.0.1", "9001"),
], ids=["bare", "dashboard", "port", "explicit-host", "bare-port"])
def test_dashboard_binds_localhost_by_default(argv, host, port, monkeypatch, capsys):
    import prunelens.analysis.cli

    seen = []
    monkeypatch.setattr(prunelens.analysis.cli, "_launch", lambda cmd, env=None: seen.append(cmd) or 0)
    monkeypatch.setattr(prunelens.analysis.cli.sys, "argv", ["prunelens", *argv])
    assert prunelens.analysis.cli.main(argv) == 0
    (cmd,) = seen
    assert cmd[cmd.index("--server.address") + 1] == host
    assert cmd[cmd.index("--server.port") + 1] == port
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert f"http://{host}:{port}" in capsys.readouterr().err


def test_no_streamlit_config_overrides_the_address():
    """A project-level .streamlit/config.toml must not widen the bind address."""
    for folder in (ROOT, ROOT / "dashboard"):
        config = folder / ".streamlit" / "config.toml"
        if config.exists():
            text = config.read_text()
            assert not re.search(r"^\s*address\s*=\s*\"(?!127\.0\.0\.1|localhost)", text, re.MULTILINE), text
            assert not re.search(r"enableXsrfProtection\s*=\s*false", text), text


# ---------------------------------------------------------------------------------------------
# 6. no eval/exec/pickle of anything


FORBIDDEN_CALLS = {"eval", "exec", "pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads",
                   "yaml.load", "yaml.unsafe_load", "os.system", "dill.load", "joblib.load",
                   "pandas.read_pickle", "pd.read_pickle", "cloudpickle.load", "shelve.open"}


def test_no_eval_or_unpickling_in_source():
    offenders = []
    for path in _sources():
        for call in _calls(path):
            name = _name(call.func)
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            if name in FORBIDDEN_CALLS:
                offenders.append(where)
            if name.endswith(("np.load", "numpy.load")) and not _is_const(
                    _keyword(call, "allow_pickle"), False) and _keyword(call, "allow_pickle") is not None:
                offenders.append(where + " allow_pickle")
            if name.startswith("subprocess.") and _is_const(_keyword(call, "shell"), True):
                offenders.append(where + " shell=True")
    assert offenders == []


def test_source_scan_finds_what_it_looks_for(tmp_path):
    """The scanner itself: a file with each forbidden pattern is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch\neval('1')\npickle.loads(b'')\ntorch.load('x')\n"
                   "torch.load('y', weights_only=False)\ntorch.load('z', weights_only=True)\n")
    names = [_name(c.func) for c in _calls(bad)]
    assert names == ["eval", "pickle.loads", "torch.load", "torch.load", "torch.load"]
    unsafe = [c for c in _calls(bad) if _name(c.func) == "torch.load"
              and not _is_const(_keyword(c, "weights_only"), True)]
    assert len(unsafe) == 2


def test_param_values_are_parsed_not_evaluated(tiny_session):
    """A ``--param`` value that is Python code is a type error, never executed."""
    from prunelens.analysis.errors import ParamError
    from prunelens.analysis.operations import compute_scores

    with pytest.raises(ParamError, match="must be an integer"):
        compute_scores(tiny_session, "random", "head", {"seed": "__import__('os').getpid()"})
    with pytest.raises(ParamError, match="must be true or false"):
        compute_scores(tiny_session, "michel", "head", {"normalize": "not False"})
