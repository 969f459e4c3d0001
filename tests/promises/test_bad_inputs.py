"""The bad-input catalogue: every way a user can point prunelens at the wrong thing.

CLI cases run ``prunelens.analysis.cli.main`` in-process (fast) and assert exit code 2, exactly one
``error:`` line on stderr naming the problem, and no traceback; a few run as real
``python -m prunelens`` subprocesses to prove the same from the outside. Dashboard cases (AppTest)
assert an error element on the page and that the app still answers a valid choice afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_util import run_cli

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# fixtures: bad model folders and bad data files, all tiny


class _Evil:
    """Unpickling this would run a shell command; weights_only loading must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_config_kwargs() -> dict:
    return {"vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 8, "max_position_embeddings": 16}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_bert_dir, tiny_csv) -> dict[str, Path]:
    """Paths of every bad model folder and data file, keyed by short names."""
    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("bad")
    p: dict[str, Path] = {"bert": tiny_bert_dir, "csv": tiny_csv, "root": root}

    p["empty_model"] = root / "empty_model"
    p["empty_model"].mkdir()
    p["no_weights"] = root / "no_weights"
    p["no_weights"].mkdir()
    shutil.copy(tiny_bert_dir / "config.json", p["no_weights"])
    p["bad_config"] = root / "bad_config"
    shutil.copytree(tiny_bert_dir, p["bad_config"])
    (p["bad_config"] / "config.json").write_text('{"model_type": "bert", ')  # cut short
    p["gpt2"] = root / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=30, n_positions=16,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(p["gpt2"])
    p["distilbert"] = root / "distilbert"
    DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=30, dim=16, n_layers=1, n_heads=2, hidden_dim=8,
        max_position_embeddings=16)).save_pretrained(p["distilbert"])
    p["headless"] = root / "headless"  # a BertModel: the config says so
    BertModel(BertConfig(**_tiny_config_kwargs())).save_pretrained(p["headless"])
    shutil.copy(tiny_bert_dir / "vocab.txt", p["headless"])
    p["headless_noarch"] = root / "headless_noarch"  # a BertModel whose config hides it
    shutil.copytree(p["headless"], p["headless_noarch"])
    cfg = json.loads((p["headless_noarch"] / "config.json").read_text())
    cfg.pop("architectures", None)
    (p["headless_noarch"] / "config.json").write_text(json.dumps(cfg))
    p["pickle_bomb"] = root / "pickle_bomb"  # pytorch_model.bin that runs code when unpickled
    p["pickle_bomb"].mkdir()
    for f in tiny_bert_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, p["pickle_bomb"])
    p["pickle_marker"] = root / "PICKLE_RAN"
    with open(p["pickle_bomb"] / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": _Evil(p["pickle_marker"])}, f)
    p["model_file"] = tiny_bert_dir / "config.json"

    files = {
        "nocols.csv": b"sentence,y\nhello,1\n",
        "text_only.csv": b"text\nhello there\ngood film\n",
        "empty.csv": b"",
        "latin1.csv": "text,label\ncaf\xe9 tr\xe8s bon,1\n".encode("latin-1"),
        "header_only.csv": b"text,label\n",
        "blank.csv": b"\n\n\n",
        "label3.csv": b"text,label\ngood,0\nbad,3\n",
        "negative.csv": b"text,label\ngood,0\nbad,-1\n",
        "fraction.csv": b"text,label\ngood,0\nbad,0.5\n",
        "three_names.csv": b"text,label\ngood,pos\nbad,neg\nok,neutral\n",
        "no_labels.csv": b"text,label\ngood,\nbad,\n",
        "broken.jsonl": b'{"text": "good", "label": 1}\n{"text": broken\n',
        "sheet.xlsx": b"PK\x03\x04 not a csv",
        "big.csv": b"text,label\n" + b"good movie,1\n" * 200,
        "long.csv": ("text,label\n" + "good " * 20000 + ",1\nbad film,0\n").encode(),
    }
    for name, raw in files.items():
        (root / name).write_bytes(raw)
        p[name] = root / name
    p["missing.csv"] = root / "missing.csv"
    p["nodir_json"] = root / "no" / "such" / "folder" / "out.json"
    return p


def fill(argv: list[str], paths: dict[str, Path]) -> list[str]:
    """Replace ``{name}`` placeholders with the fixture paths."""
    return [re.sub(r"\{([\w.]+)\}", lambda m: str(paths[m.group(1)]), a) for a in argv]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------------------------------------
# the catalogue: (id, argv with {placeholders}, regex the single error line must match)

M = ["--model", "{bert}", "--data", "{csv}", "--quiet"]  # a valid model/data pair
SCORE = ["score", "--method", "magnitude"]
PRUNE = ["prune", "--method", "magnitude"]


def _with(argv: list[str], **override: str) -> list[str]:
    out = list(argv)
    for flag, value in override.items():
        out[out.index(f"--{flag}") + 1] = value
    return out


CASES: list[tuple[str, list[str], str]] = [
    # models
    ("model-missing-folder", SCORE + _with(M, model="{root}/nothere"), r"model folder not found: .*nothere"),
    ("model-empty-folder", SCORE + _with(M, model="{empty_model}"), r"model folder .*empty_model has no config\.json"),
    ("model-config-no-weights", SCORE + _with(M, model="{no_weights}"), r"model folder .*no_weights has no weights"),
    ("model-is-a-file", SCORE + _with(M, model="{model_file}"), r"model path .*config\.json is a file"),
    ("model-bad-config-json", SCORE + _with(M, model="{bad_config}"), r"cannot read config of .*bad_config"),
    ("model-gpt2", SCORE + _with(M, model="{gpt2}"), r"is a 'gpt2' model, which prunelens has no family entry for; it opens these encoder "
     r"families: bert \(bert, roberta.*distilbert; albert; deberta-v2; mpnet; modernbert \(docs/FAMILIES\.md"),
    ("model-distilbert", SCORE + _with(M, model="{distilbert}"), r"distilbert has no tokenizer files"),  # a family it opens: refused for what it lacks
    # a BertModel loads as a headless sentence encoder (issue 27): only the embedding objective fits it
    ("model-no-head-objective", SCORE + _with(M, model="{headless}") + ["--objective", "labels"],
     r"has no classification head, so --objective labels has no classes to compare \(use --objective embedding\)"),
    ("model-no-head-weights", SCORE + _with(M, model="{headless_noarch}"), r"has no trained sequence-classification head"),
    ("model-hub-offline", SCORE + _with(M, model="no-such-org-xyz/no-such-model"), r"not found in the local hub cache"),
    ("model-hub-offline-bare", SCORE + _with(M, model="bert-base-uncased"), r"'bert-base-uncased' is not a local folder"),
    ("model-pickle-bomb", SCORE + _with(M, model="{pickle_bomb}"), r"cannot load model .*pickle_bomb: Weights only load failed"),
    # data
    ("data-labels-objective-no-labels", SCORE + _with(M, data="{text_only.csv}") + ["--objective", "labels"],
     r"--objective labels needs a 'label' column and data 'text_only\.csv' has none \(use --objective agreement"),
    ("data-no-text-label", SCORE + _with(M, data="{nocols.csv}"), r"nocols\.csv needs columns 'text' and 'label' \(found: sentence, y\)"),
    ("data-empty-file", SCORE + _with(M, data="{empty.csv}"), r"data file empty\.csv is empty"),
    ("data-latin1", SCORE + _with(M, data="{latin1.csv}"), r"data file latin1\.csv is not UTF-8 text \(save it as UTF-8\)"),
    ("data-zero-rows", SCORE + _with(M, data="{header_only.csv}"), r"header_only\.csv has no rows"),
    ("data-blank-lines", SCORE + _with(M, data="{blank.csv}"), r"could not parse blank\.csv"),
    ("data-label-count", SCORE + _with(M, data="{label3.csv}"), r"has label 3 but model .* has 2 labels \(use data whose labels are 0\.\.1\)"),
    ("data-label-negative", SCORE + _with(M, data="{negative.csv}"), r"negative\.csv: labels must be non-negative integers"),
    ("data-label-fraction", SCORE + _with(M, data="{fraction.csv}"), r"fraction\.csv: labels must be non-negative integers"),
    ("data-label-names-out-of-range", SCORE + _with(M, data="{three_names.csv}"), r"has label 2 but model .* has 2 labels"),
    ("data-labels-blank", SCORE + _with(M, data="{no_labels.csv}"), r"no rows with both text and label"),
    ("data-broken-jsonl", SCORE + _with(M, data="{broken.jsonl}"), r"could not parse broken\.jsonl"),
    ("data-unsupported-type", SCORE + _with(M, data="{sheet.xlsx}"), r"unsupported data file type '\.xlsx'"),
    ("data-missing-file", SCORE + _with(M, data="{missing.csv}"), r"data file not found: .*missing\.csv"),
    ("data-is-directory", SCORE + _with(M, data="{root}"), r"is a folder \(give a CSV or JSONL"),
    ("data-unknown-spec", SCORE + _with(M, data="whatever"), r"unknown data 'whatever'"),
    ("data-unknown-glue-task", SCORE + _with(M, data="glue:foo"), r"unknown GLUE task 'foo' \(choose one of: cola,"),
    # parameters
    ("sparsity-negative", PRUNE + ["--sparsity", "-0.1"] + M, r"sparsity must be in \[0, 1\), got -0\.1"),
    ("sparsity-one", PRUNE + ["--sparsity", "1.0"] + M, r"sparsity must be in \[0, 1\), got 1\.0"),
    ("sparsity-text", PRUNE + ["--sparsity", "abc"] + M, r"argument --sparsity: invalid float value: 'abc'"),
    ("sparsity-nan", PRUNE + ["--sparsity", "nan"] + M, r"sparsity must be in \[0, 1\), got nan"),
    ("threshold-negative", PRUNE + ["--threshold", "-1"] + M, r"threshold must be a finite number >= 0, got -1\.0"),
    ("threshold-and-sparsity", PRUNE + ["--threshold", "0.1", "--sparsity", "0.2"] + M, r"either a sparsity or a threshold, not both"),
    ("prune-neither", PRUNE + M, r"give --sparsity or --threshold"),
    ("method-unknown", ["score", "--method", "nope"] + M, r"unknown method 'nope' \(choose one of: .*magnitude"),
    ("method-traversal-name", ["score", "--method", "../../etc/passwd"] + M, r"unknown method '\.\./\.\./etc/passwd'"),
    ("unit-unknown", SCORE + ["--unit", "weight"] + M, r"method 'magnitude' scores units .*, not 'weight'"),
    ("param-wrong-type-int", ["score", "--method", "random", "--param", "seed=abc"] + M, r"parameter 'seed' must be an integer, got 'abc'"),
    ("param-wrong-type-float-int", ["score", "--method", "random", "--param", "seed=1.5"] + M, r"parameter 'seed' must be an integer, got '1\.5'"),
    ("param-out-of-range", ["score", "--method", "random", "--param", "seed=-1"] + M, r"parameter 'seed' must be in \[0, "),
    ("param-wrong-type-bool", ["score", "--method", "michel", "--param", "normalize=maybe"] + M, r"parameter 'normalize' must be true or false, got 'maybe'"),
    ("param-unknown-name", ["score", "--method", "michel", "--param", "foo=1"] + M, r"method 'michel' has no parameter 'foo' \(it has: per, examples, batch_size, normalize, seed\)"),
    ("param-no-equals", ["score", "--method", "michel", "--param", "normalize"] + M, r"--param takes name=value, got 'normalize'"),
    ("limit-zero", SCORE + M + ["--limit", "0"], r"--limit must be a positive number of examples, got 0"),
    ("limit-negative", SCORE + M + ["--limit", "-5"], r"--limit must be a positive number of examples, got -5"),
    ("limit-text", SCORE + M + ["--limit", "ten"], r"argument --limit: invalid int value: 'ten'"),
    ("scope-unknown", PRUNE + ["--sparsity", "0.5", "--scope", "everywhere"] + M, r"argument --scope: invalid choice: 'everywhere'"),
    ("json-missing-folder", SCORE + M + ["--json", "{nodir_json}"], r"cannot write .*out\.json: its folder does not exist"),
    ("csv-missing-folder", ["curve", "--methods", "magnitude", "--csv", "{nodir_json}"] + M, r"cannot write .*out\.json: its folder does not exist"),
    ("curve-sparsities-text", ["curve", "--methods", "magnitude", "--sparsities", "0,x"] + M, r"--sparsities must be comma-separated numbers, got '0,x'"),
    ("curve-sparsity-range", ["curve", "--methods", "magnitude", "--sparsities", "0,1.5"] + M, r"sparsity must be in \[0, 1\), got 1\.5"),
    ("curve-no-methods", ["curve", "--methods", ","] + M, r"--methods needs at least one method name"),
    ("curve-unknown-method", ["curve", "--methods", "magnitude,nope"] + M, r"unknown method 'nope'"),
    ("command-unknown", ["explode"], r"invalid choice: 'explode'"),
]


@pytest.fixture()
def isolated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "store"


@pytest.mark.parametrize("argv, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_bad_input(argv, pattern, bad, isolated_store, capsys):
    argv = fill(argv, bad)
    rc, out, err = run_cli(argv, capsys)
    errors = error_lines(err)
    assert rc == 2, (rc, err)
    assert len(errors) == 1, err
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert "internal error" not in err


def test_catalogue_size():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_pickle_bomb_did_not_run(bad, isolated_store, capsys):
    rc, _, err = run_cli(SCORE + ["--model", str(bad["pickle_bomb"]), "--data", str(bad["csv"])], capsys)
    assert rc == 2, err
    assert not bad["pickle_marker"].exists()


def test_upload_over_cap(bad, isolated_store, capsys, monkeypatch):
    import prunelens.analysis.data

    size = bad["big.csv"].stat().st_size
    monkeypatch.setattr(prunelens.analysis.data, "MAX_UPLOAD_BYTES", size - 1)
    rc, _, err = run_cli(SCORE + _with(fill(M, bad),
                                       data=str(bad["big.csv"])), capsys)
    assert rc == 2
    (line,) = error_lines(err)
    assert re.search(r"data file big\.csv is \d+ MB, over the \d+ MB cap", line), line


def test_glue_offline(bad, isolated_store, capsys, monkeypatch):
    """A known GLUE task without the hub or a local copy: a DataError, not a hang or traceback."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("PRUNELENS_GLUE_DIR", raising=False)
    rc, _, err = run_cli(SCORE + _with(fill(M, bad),
                                       data="glue:sst2"), capsys)
    assert rc == 2
    (line,) = error_lines(err)
    assert "GLUE task 'sst2' is not in the local datasets cache" in line and "PRUNELENS_GLUE_DIR" in line


def test_admm_n_greater_than_m(bad, isolated_store, capsys):
    from prunelens.analysis.methods import all_methods

    method = all_methods().get("admm")
    if method is None:
        pytest.skip("admm is not registered yet")
    names = {p.name.lower(): p.name for p in method.params}
    if "n" not in names or "m" not in names:
        pytest.skip(f"admm declares no n/m parameters ({', '.join(names)})")
    argv = (["score", "--method", "admm", "--param", f"{names['n']}=5", "--param", f"{names['m']}=4"]
            + fill(M, bad))
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2, err
    (line,) = error_lines(err)
    assert "N must not exceed M (got 5:4)" in line, line
    assert "Traceback" not in err


def test_long_text_is_truncated_and_said_so(bad, isolated_store, capsys, tmp_path):
    """A 100k-character text is evaluated (truncated to the model's length) and the note says so."""
    out_json = tmp_path / "prune.json"
    argv = PRUNE + ["--sparsity", "0.25", "--model", str(bad["bert"]), "--data",
                    str(bad["long.csv"]), "--quiet", "--json", str(out_json)]
    assert len(bad["long.csv"].read_text()) > 100_000
    rc, _, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "note: 1 example(s) longer than the limit were truncated" in err.splitlines()
    payload = json.loads(out_json.read_text())
    assert payload["notes"] == ["1 example(s) longer than the limit were truncated"]
    assert payload["data"]["n"] == 2


def test_long_text_truncated_to_model_positions(tiny_loaded):
    """The tokenizer cap follows the model's position embeddings (64 in the tiny BERT)."""
    import numpy as np

    from prunelens.analysis.data import TextData, tokenize_batches

    data = TextData("long", "all", ["good " * 20000, "bad"], np.array([1, 0]))
    batches, truncated = tokenize_batches(tiny_loaded.tokenizer, data, max_length=128)
    assert truncated == 1
    assert max(b.input_ids.shape[1] for b in batches) == tiny_loaded.model.config.max_position_embeddings


# ---------------------------------------------------------------------------------------------
# the same from the outside: real subprocesses, run side by side


SUBPROCESS_CASES = ["model-gpt2", "limit-text"]


def test_cli_subprocess_no_traceback(bad, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PRUNELENS_CACHE": str(tmp_path / "store"),
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PRUNELENS_DEBUG", None)
    by_id = {c[0]: c for c in CASES}
    procs = []
    for case_id in SUBPROCESS_CASES:
        _, argv, pattern = by_id[case_id]
        cmd = [sys.executable, "-m", "prunelens", *fill(argv, bad)]
        procs.append((case_id, pattern, subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for case_id, pattern, proc in procs:
        out, err = proc.communicate(timeout=120)
        errors = error_lines(err)
        assert proc.returncode == 2, (case_id, err)
        assert len(errors) == 1 and re.search(pattern, errors[0]), (case_id, err)
        assert "Traceback" not in err + out, case_id


# ---------------------------------------------------------------------------------------------
# the dashboard: the same inputs through the sidebar (URL parameters and uploads)


def _app(query: dict[str, str] | None = None, state: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    for name, value in (state or {}).items():
        at.session_state[name] = value
    return at


def _all_errors(at) -> list[str]:
    return [e.value for e in at.error] + [e.value for e in at.sidebar.error]


def _assert_recovers(at, bad: dict[str, Path]) -> None:
    """The same session, given a valid model and data, loads them and shows the page."""
    at.session_state["sb.model_kind"] = "folder"
    at.session_state["sb.model_folder"] = str(bad["bert"])
    at.session_state["sb.data_kind"] = "file"
    at.session_state["sb.data_file"] = str(bad["csv"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _all_errors(at) == []
    (ok,) = at.sidebar.success
    assert str(bad["bert"]) in ok.value and "40 examples" in ok.value
    assert len(at.metric) == 4  # base accuracy, loss, margin, task metric


DASH_CASES: list[tuple[str, dict[str, str], str]] = [
    ("dash-model-gpt2", {"model": "{gpt2}", "data": "{csv}"}, r"is a 'gpt2' model, which prunelens has no family entry for"),
    ("dash-model-missing", {"model": "{root}/nothere", "data": "{csv}"}, r"model folder not found"),
    ("dash-model-no-head", {"model": "{headless_noarch}", "data": "{csv}"}, r"no trained sequence-classification head"),
    ("dash-model-no-weights", {"model": "{no_weights}", "data": "{csv}"}, r"has no weights"),
    ("dash-model-hub-offline", {"model": "no-such-org-xyz/no-such-model", "data": "{csv}"}, r"not found in the local hub cache"),
    ("dash-data-label-count", {"model": "{bert}", "data": "{label3.csv}"}, r"has label 3 but model .* has 2 labels"),
    ("dash-data-latin1", {"model": "{bert}", "data": "{latin1.csv}"}, r"latin1\.csv is not UTF-8 text"),
    ("dash-data-zero-rows", {"model": "{bert}", "data": "{header_only.csv}"}, r"header_only\.csv has no rows"),
    ("dash-data-missing", {"model": "{bert}", "data": "{missing.csv}"}, r"data file not found"),
    ("dash-data-no-columns", {"model": "{bert}", "data": "{nocols.csv}"}, r"needs columns 'text' and 'label'"),
    ("dash-data-labels-objective", {"model": "{bert}", "data": "{text_only.csv}", "objective": "labels"},
     r"--objective labels needs a 'label' column"),
]


@pytest.mark.parametrize("query, pattern", [c[1:] for c in DASH_CASES], ids=[c[0] for c in DASH_CASES])
def test_dashboard_bad_input(query, pattern, bad, isolated_store):
    at = _app({k: fill([v], bad)[0] for k, v in query.items()}).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _all_errors(at)
    assert errors and any(re.search(pattern, e) for e in errors), errors
    assert "Traceback" not in " ".join(errors)
    _assert_recovers(at, bad)


UPLOAD_CASES = [
    ("upload-latin1", "latin1.csv", r"latin1\.csv is not UTF-8 text"),
    ("upload-empty", "empty.csv", r"empty\.csv is empty"),
    ("upload-label-count", "label3.csv", r"has label 3 but model"),
    ("upload-over-cap", "big.csv", r"big\.csv is \d+ MB, over the \d+ MB cap"),
]


@pytest.mark.parametrize("name, pattern", [c[1:] for c in UPLOAD_CASES], ids=[c[0] for c in UPLOAD_CASES])
def test_dashboard_bad_upload(name, pattern, bad, isolated_store, monkeypatch):
    import prunelens.analysis.data

    monkeypatch.setattr(prunelens.analysis.data, "MAX_UPLOAD_BYTES", bad["big.csv"].stat().st_size - 1)
    at = _app({"model": str(bad["bert"])}, {"sb.data_kind": "upload"}).run()
    at.sidebar.file_uploader(key="sb.upload").upload(name, bad[name].read_bytes(), "text/csv")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = _all_errors(at)
    assert errors and any(re.search(pattern, e) for e in errors), errors
    # a good upload in the same session works
    at.sidebar.file_uploader(key="sb.upload").set_value(("good.csv", bad["csv"].read_bytes(), "text/csv"))
    at.run()
    assert not at.exception and _all_errors(at) == []
    assert "good.csv" in at.sidebar.success[0].value


def test_dashboard_tampered_url_falls_back_to_defaults(bad, isolated_store):
    """A shared link with nonsense values (unknown method, path-like names, text for numbers)
    opens the Prune page on its defaults: no exception, no error, a working slider."""
    query = {"model": str(bad["bert"]), "data": str(bad["csv"]), "method": "../../etc/passwd",
             "unit": "weight", "sparsity": "abc", "scope": "everywhere", "limit": "-5",
             "mode": "<script>alert(1)</script>", "keep_one": "maybe"}
    at = _app(query).run()
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _all_errors(at) == []
    assert "40 examples" in at.sidebar.success[0].value  # limit -5 ignored: the whole file
    assert at.slider(key="prune.sparsity").value == 0.5
    from prunelens.analysis.methods import all_methods

    assert at.selectbox(key="prune.method").value in all_methods()
    assert {m.label for m in at.metric} >= {"accuracy", "loss", "margin"}
