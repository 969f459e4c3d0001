"""Robustness under attack (issue 15): inputs that used to load silently, give wrong numbers or
crash now give one clear ``error: <what> (<what to do>)`` line with exit code 2 on the CLI, or a
message on the dashboard page.

Every test names, in a one-line comment, what the code did before this change. CLI cases run
``prunelens.analysis.cli.main`` in-process; models and data are tiny variants of ``tests/tiny.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.cli_util import one_error as _one_error
from tests.cli_util import run_cli
from tests.tiny import VOCAB, write_tiny_csv

LONG = "a" * 5000  # one path component far past NAME_MAX (255)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    """``prunelens argv`` in-process: (exit code, stderr)."""
    rc, _, err = run_cli(argv, capsys)
    return rc, err


# ---------------------------------------------------------------------------------------------
# tiny model variants


def _variant(src: Path, dst: Path, config: dict | None = None, weights=None,
             drop: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny BERT folder with config.json fields replaced, the weights passed through
    ``weights(state) -> state`` and the files in ``drop`` removed."""
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    if weights is not None:
        state = load_file(str(dst / "model.safetensors"))
        save_file(weights(state), str(dst / "model.safetensors"))
    for name in drop:
        (dst / name).unlink()
    return dst


def _rename(old: str, new: str):
    return lambda state: {new if k == old else k: v for k, v in state.items()}


def _into_folder(name: str):
    def make(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return make


def _tokenizer_of(vocab: list[str]):
    """Replace a folder's tokenizer by a WordPiece one over ``vocab``."""
    from transformers import BertTokenizerFast

    def make(folder: Path) -> None:
        for name in ("vocab.txt", "tokenizer.json"):
            (folder / name).unlink()
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)

    return make


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack_models")
    layer1_ffn = "bert.encoder.layer.1.output.dense.weight"
    out = {
        # an 8 KB-style checkpoint: only the classifier's two tensors
        "weights-classifier-only": _variant(tiny_bert_dir, root / "head_only", weights=lambda s: {
            k: v for k, v in s.items() if k.startswith("classifier")}),
        # same number of stored values, one tensor under a name the architecture does not use
        "weights-one-tensor-renamed": _variant(tiny_bert_dir, root / "renamed",
                                               weights=_rename(layer1_ffn, layer1_ffn + "_x")),
        "config-more-layers": _variant(tiny_bert_dir, root / "more_layers", {"num_hidden_layers": 4}),
        "config-fewer-layers": _variant(tiny_bert_dir, root / "fewer_layers", {"num_hidden_layers": 1}),
        "no-tokenizer-files": _variant(tiny_bert_dir, root / "no_tokenizer",
                                       drop=("vocab.txt", "tokenizer.json", "tokenizer_config.json")),
        "tokenizer-file-is-a-folder": _variant(tiny_bert_dir, root / "vocab_dir", drop=("tokenizer.json",)),
        "tokenizer-specials-only": _variant(tiny_bert_dir, root / "specials_only"),
        "tokenizer-ids-past-embeddings": _variant(tiny_bert_dir, root / "foreign_tokenizer"),
        "config-is-a-folder": _variant(tiny_bert_dir, root / "config_dir"),
        "weights-is-a-folder": _variant(tiny_bert_dir, root / "weights_dir"),
    }
    _into_folder("vocab.txt")(out["tokenizer-file-is-a-folder"])
    _tokenizer_of(VOCAB[:5])(out["tokenizer-specials-only"])
    # a bigger model's tokenizer: the same words get ids past the embeddings' 28 rows
    _tokenizer_of(VOCAB[:5] + [f"filler{i}" for i in range(100)] + VOCAB[5:])(
        out["tokenizer-ids-past-embeddings"])
    _into_folder("config.json")(out["config-is-a-folder"])
    _into_folder("model.safetensors")(out["weights-is-a-folder"])
    # one token type: the embedding table of a RoBERTa-style model, read by a BERT tokenizer
    out["one-token-type"] = _variant(
        tiny_bert_dir, root / "one_type", {"type_vocab_size": 1},
        weights=lambda s: {k: (v[:1].clone() if "token_type_embeddings" in k else v) for k, v in s.items()})
    return out


PRUNE = ["prune", "--method", "magnitude", "--sparsity", "0.25", "--quiet"]

MODEL_CASES = [
    # old: only classifier keys were checked; 39 missing encoder tensors were random-initialised, rc 0
    ("weights-classifier-only", r"has weights for 34 numbers but its config\.json needs [\d,]+ "),
    # old: the missing tensor was random-initialised (and the stray one ignored), rc 0
    ("weights-one-tensor-renamed",
     r"weights lack 1 tensor the architecture needs \(bert\.encoder\.layer\.1\.output\.dense\.weight\)"),
    # old: layers 2 and 3 were random (a new fingerprint on every load), rc 0
    ("config-more-layers", r"has weights for [\d,]+ numbers but its config\.json needs [\d,]+ .*4 layers"),
    # old: layer 1's stored weights were silently dropped, rc 0
    ("config-fewer-layers", r"weights hold encoder layer 1, which config\.json \(num_hidden_layers=1\) does not have"),
    # old: an empty vocabulary: every word became [UNK], rc 0
    ("no-tokenizer-files", r"model folder .*no_tokenizer has no tokenizer files \(vocab\.txt, tokenizer\.json"),
    # old: vocab.txt (a folder) was skipped and the same all-[UNK] vocabulary built, rc 0
    ("tokenizer-file-is-a-folder", r"cannot read the tokenizer of model .*vocab_dir: vocab\.txt is a folder, "
                                   r"not a file"),
    # old: a tokenizer of special tokens only: every word became [UNK], rc 0
    ("tokenizer-specials-only", r"tokenizer of model .*specials_only has no vocabulary besides its special "
                                r"tokens"),
    # old: IndexError in the embedding at the first forward: `internal error`, rc 1
    ("tokenizer-ids-past-embeddings", r"tokenizer of model .* has token ids up to 127 but the model's "
                                      r"embeddings have 28 rows"),
    # old: "Unrecognized model ... Should have a `model_type` key" (misleading), rc 2
    ("config-is-a-folder", r"cannot read config of .*config_dir: config\.json is a folder, not a file"),
    # old: "no file named model.safetensors found" (it is there, as a folder), rc 2
    ("weights-is-a-folder", r"cannot read the weights of .*weights_dir: model\.safetensors is a folder, not a file"),
]


@pytest.mark.parametrize("case, pattern", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_invalid_model_is_refused(case, pattern, models, tiny_csv, isolated, capsys):
    rc, err = _cli(PRUNE + ["--model", str(models[case]), "--data", str(tiny_csv)], capsys)
    _one_error(rc, err, pattern)


# ---------------------------------------------------------------------------------------------
# absurd configs: refused from config.json alone, before anything is allocated

BOUND_CASES = [
    ("layers-100000", {"num_hidden_layers": 100_000}, r"num_hidden_layers = 100000 is outside 1\.\.\d+"),
    ("layers-0", {"num_hidden_layers": 0}, r"num_hidden_layers = 0 is outside 1\.\.\d+"),
    ("hidden-1e6", {"hidden_size": 10**6}, r"hidden_size = 1000000 is outside 1\.\.\d+"),
    ("heads-not-dividing-hidden", {"num_attention_heads": 3},
     r"hidden_size 16 is not a multiple of num_attention_heads 3"),
    ("heads-0", {"num_attention_heads": 0}, r"num_attention_heads = 0 is outside 1\.\.\d+"),
    ("vocab-1e9", {"vocab_size": 10**9}, r"vocab_size = 1000000000 is outside 1\.\.\d+"),
    ("positions-1e7", {"max_position_embeddings": 10**7}, r"max_position_embeddings = 10000000 is outside"),
    ("ffn-1e8", {"intermediate_size": 10**8}, r"intermediate_size = 100000000 is outside 1\.\.\d+"),
    ("token-types-0", {"type_vocab_size": 0}, r"type_vocab_size = 0 is outside 1\.\.\d+"),
    ("labels-1e6", {"num_labels": 10**6, "id2label": None, "label2id": None},
     r"num_labels = 1000000 is outside 1\.\.\d+"),
    # each size within its bound, together ~70 billion parameters
    ("parameters-over-cap", {"num_hidden_layers": 90, "hidden_size": 8192, "num_attention_heads": 64,
                             "intermediate_size": 32768},
     r"config\.json describes [\d,]+ parameters, over the cap of [\d,]+"),
]


@pytest.fixture()
def no_allocation(monkeypatch):
    """Fail if a model is built (from_pretrained / from_config) before the config is checked."""
    import transformers

    def allocated(*args, **kwargs):
        raise AssertionError("a model was allocated before config.json was checked")

    for name in ("from_pretrained", "from_config"):
        monkeypatch.setattr(transformers.AutoModelForSequenceClassification, name, allocated)


@pytest.mark.parametrize("config, pattern", [c[1:] for c in BOUND_CASES], ids=[c[0] for c in BOUND_CASES])
def test_absurd_config_refused_before_allocating(config, pattern, tiny_bert_dir, tiny_csv, tmp_path,
                                                isolated, no_allocation, capsys):
    # old: no bounds; the model was allocated (here: the sentinel raised -> "cannot load model"), and
    # num_labels=1e6 alone cost 8 s in AutoConfig; heads 3 failed inside the model constructor
    folder = _variant(tiny_bert_dir, tmp_path / "absurd")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update({k: v for k, v in config.items() if v is not None})
    for k in [k for k, v in config.items() if v is None]:
        cfg.pop(k, None)
    (folder / "config.json").write_text(json.dumps(cfg))
    rc, err = _cli(PRUNE + ["--model", str(folder), "--data", str(tiny_csv)], capsys)
    line = _one_error(rc, err, pattern)
    assert "fix config.json" in line


def test_bert_large_fits_the_bounds():
    # old: there were no bounds (check_config_bounds did not exist)
    from transformers import BertConfig

    from prunelens.analysis.models import CONFIG_BOUNDS, check_config_bounds

    large = BertConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                       intermediate_size=4096, vocab_size=30522, max_position_embeddings=512)
    check_config_bounds(large, "bert-large")
    xlmr_large = BertConfig(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                            intermediate_size=4096, vocab_size=250002, max_position_embeddings=514)
    check_config_bounds(xlmr_large, "xlm-roberta-large-shaped")
    lo, hi = CONFIG_BOUNDS["num_hidden_layers"]
    assert lo == 1 and hi >= 2 * 24


# ---------------------------------------------------------------------------------------------
# data rows and labels

DATA_FILES = {
    "extra-field-first-row.csv": b"text,label\ngood, fun,1\nbad,0\n",
    "extra-field-later-row.csv": b"text,label\ngood,0\nbad, awful,1\n",
    "extra-field-trailing-comma.csv": b"text,label\ngood,1,\nbad,0,\n",
    "extra-field.tsv": b"text\tlabel\ngood\tfun\t1\nbad\t0\n",
    "nan-label.csv": b"text,label\ngood,1\nbad,\nfun,1\n",
    "nan-label-after-quoted-newline.csv": b'text,label\n"good\nfun",1\nbad,\n',
    "nan-label.jsonl": b'{"text": "good", "label": 1}\n{"text": "bad", "label": null}\n',
    "label-1e20.csv": b"text,label\ngood,0\nbad,1e20\n",
    "label-inf.csv": b"text,label\ngood,0\nbad,inf\n",
    "label-negative.csv": b"text,label\ngood,0\nbad,-1\n",
    "label-fraction.csv": b"text,label\ngood,0\nbad,2.5\n",
}

DATA_CASES = [
    # old: "good" became the row index and "fun" the text; the next row lost its label, rc 0
    ("extra-field-first-row.csv", r"extra-field-first-row\.csv line 2 has 3 fields but the header has 2"),
    # old: pandas' "Error tokenizing data. C error: Expected 2 fields in line 3" (no hint), rc 2
    ("extra-field-later-row.csv", r"extra-field-later-row\.csv line 3 has 3 fields but the header has 2 "
                                  r"\(quote texts that contain ','"),
    # old: shifted into an index column: "no rows with both text and label filled in" (misleading)
    ("extra-field-trailing-comma.csv", r"line 2 has 3 fields but the header has 2"),
    # old: the same silent shift for tab-separated files, rc 0
    ("extra-field.tsv", r"extra-field\.tsv line 2 has 3 fields but the header has 2 \(quote texts that contain tabs"),
    # old: the row without a label was dropped without a word, rc 0 on 2 of 3 rows
    ("nan-label.csv", r"nan-label\.csv line 3 has no label \(fill in every label or remove that row\)"),
    # old: dropped silently; the line number must count the quoted newline
    ("nan-label-after-quoted-newline.csv", r"line 4 has no label"),
    # old: dropped silently (JSONL: null label), rc 0
    ("nan-label.jsonl", r"nan-label\.jsonl line 2 has no label"),
    # old: 1e20 wrapped to -2**63 in int64 and passed the label check: wrong numbers or a crash
    ("label-1e20.csv", r"labels must be non-negative integers below [\d,]+ or class names \(line 3 has 1e\+20"),
    # old: inf passed the integer check and became -2**63: `internal error` or wrong numbers
    ("label-inf.csv", r"labels must be non-negative integers below [\d,]+ or class names \(line 3 has inf"),
    # old: refused, but without saying which row
    ("label-negative.csv", r"label-negative\.csv: labels must be non-negative integers .*\(line 3 has -1;"),
    # old: refused, but without saying which row
    ("label-fraction.csv", r"label-fraction\.csv: labels must be non-negative integers .*\(line 3 has 2\.5;"),
]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack_data")
    out = {}
    for name, raw in DATA_FILES.items():
        (root / name).write_bytes(raw)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name, pattern", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_rows_and_labels_are_refused(name, pattern, data_files, tiny_bert_dir, isolated, capsys):
    rc, err = _cli(PRUNE + ["--model", str(tiny_bert_dir), "--data", str(data_files[name])], capsys)
    _one_error(rc, err, pattern)


def test_jsonl_unknown_keys_and_missing_text_are_reported_not_refused(tmp_path):
    # old: the row without text vanished without a word (no note); unknown keys were fine and stay so
    from prunelens.analysis.data import load_data

    path = tmp_path / "extra.jsonl"
    path.write_text('{"text": "good", "label": 1, "id": 7, "source": "x"}\n'
                    '{"label": 0, "id": 8}\n{"text": "bad", "label": 0, "id": 9}\n')
    data = load_data(str(path))
    assert data.texts == ["good", "bad"] and data.labels.tolist() == [1, 0]
    assert any("1 row without text skipped (line 2)" in n for n in data.notes), data.notes


# ---------------------------------------------------------------------------------------------
# crashes instead of errors

CRASH_CASES = [
    # old: OSError ENAMETOOLONG from Path.exists(): `internal error`, rc 1
    ("model-path-too-long", ["--model", "/tmp/" + LONG], r"model path '/tmp/a+…' \(5005 characters\) cannot be "
                                                         r"used: File name too long"),
    # old: the same OSError from the data path
    ("data-path-too-long", ["--data", "/tmp/" + LONG + ".csv"], r"data path '/tmp/a+…' \(5009 characters\) "
                                                                r"cannot be used: File name too long"),
    # old: RuntimeError "Could not determine home directory": `internal error`, rc 1
    ("model-unknown-user", ["--model", "~nosuchuser/x"], r"model path '~nosuchuser/x': there is no user "
                                                         r"'nosuchuser'"),
    ("data-unknown-user", ["--data", "~nosuchuser/x.csv"], r"data path '~nosuchuser/x\.csv': there is no user "
                                                           r"'nosuchuser'"),
    # old: the same RuntimeError from the --json folder check
    ("json-unknown-user", ["--json", "~nosuchuser/out.json"], r"cannot write '~nosuchuser/out\.json': there is "
                                                              r"no user 'nosuchuser'"),
    # old: passed through until the end, then "cannot write" with the whole 5000-character path
    ("json-path-too-long", ["--json", "/tmp/" + LONG + ".json"], r"cannot write '/tmp/a+…' \(5010 characters\): "
                                                                 r"File name too long"),
]


@pytest.mark.parametrize("argv, pattern", [c[1:] for c in CRASH_CASES], ids=[c[0] for c in CRASH_CASES])
def test_bad_paths_are_clear_errors(argv, pattern, tiny_bert_dir, tiny_csv, isolated, capsys):
    base = {"--model": str(tiny_bert_dir), "--data": str(tiny_csv)}
    base.update(dict(zip(argv[::2], argv[1::2])))
    rc, err = _cli(PRUNE + [x for kv in base.items() for x in kv], capsys)
    _one_error(rc, err, pattern)


def test_json_in_the_home_folder_is_written_there(tiny_bert_dir, tiny_csv, isolated, monkeypatch, capsys):
    # old: the folder check expanded "~" but the writer did not: after all the work, "cannot write
    # ~/out.json: No such file or directory" (a folder literally named "~"), rc 2
    monkeypatch.setenv("HOME", str(isolated / "home"))
    (isolated / "home").mkdir()
    monkeypatch.chdir(isolated)
    rc, err = _cli(PRUNE + ["--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--json", "~/out.json"],
                   capsys)
    assert rc == 0, err
    assert json.loads((isolated / "home" / "out.json").read_text())["method"] == "magnitude"


DEVICE_CASES = [
    # old: torch.device('quantum') raised RuntimeError after loading: `internal error`, rc 1
    ("quantum", r"--device must be cpu, cuda or cuda:N, got 'quantum'"),
    ("", r"--device must be cpu, cuda or cuda:N, got ''"),
    # old: loaded everything, then failed moving to the device (no CUDA): `internal error`, rc 1
    ("cuda:99", r"--device cuda:99: (this machine's torch sees no CUDA GPU|there (is|are) \d+ CUDA device)"),
]


@pytest.mark.parametrize("device, pattern", DEVICE_CASES, ids=[c[0] or "empty" for c in DEVICE_CASES])
def test_bad_device_refused_before_loading(device, pattern, isolated, no_loading, capsys):
    rc, err = _cli(PRUNE + ["--device", device], capsys)
    line = _one_error(rc, err, pattern)
    assert "loading model" not in err and "(use --device" in line


def test_pair_data_on_a_one_token_type_model(models, tmp_path, isolated, capsys):
    # old: token type 1 indexed a 1-row embedding: IndexError, `internal error`, rc 1
    pairs = write_tiny_csv(tmp_path / "pairs.csv", pairs=True)
    rc, err = _cli(PRUNE + ["--model", str(models["one-token-type"]), "--data", str(pairs)], capsys)
    _one_error(rc, err, r"data 'pairs\.csv' has sentence pairs \(text_pair\) but model .* has one token type "
                        r"\(type_vocab_size=1\)")
    # single sentences still work on that model
    rc, err = _cli(PRUNE + ["--model", str(models["one-token-type"]), "--data",
                            str(write_tiny_csv(tmp_path / "single.csv"))], capsys)
    assert rc == 0, err


# unreadable files: chmod 000 (as root, read under the unprivileged uid 'nobody')

NOBODY = 65534


@contextlib.contextmanager
def _unprivileged():
    """Run the block as 'nobody' when this process is root (root reads chmod-000 files)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture()
def open_dir(tiny_bert_dir, tiny_csv):
    """A world-traversable folder (pytest's tmp folders are root-only) with a model, data and a
    world-writable store; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="prunelens-unreadable-"))
    root.chmod(0o777)
    shutil.copytree(tiny_bert_dir, root / "model")
    shutil.copy(tiny_csv, root / "data.csv")
    for path in [root / "model", *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    yield root
    for path in root.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(root)


UNREADABLE_CASES = [
    # old: PermissionError from Path.read_bytes(): `internal error`, rc 1
    ("data-file", "data.csv", r"cannot read data file data\.csv: Permission denied \(check"),
    # old: PermissionError from Path.exists() of config.json inside the folder: `internal error`, rc 1
    ("model-folder", "model", r"cannot read model folder .*model: Permission denied \(check"),
    # old: "cannot load model ...: No such file or directory: .../model.safetensors" (it is there)
    ("model-weights", "model/model.safetensors",
     r"cannot read the weights of .*model: model\.safetensors: Permission denied \(check"),
]


@pytest.mark.parametrize("target, pattern", [c[1:] for c in UNREADABLE_CASES], ids=[c[0] for c in UNREADABLE_CASES])
def test_unreadable_file_is_a_clear_error(target, pattern, open_dir, monkeypatch, capsys):
    monkeypatch.setenv("PRUNELENS_CACHE", str(open_dir / "store"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = PRUNE + ["--model", str(open_dir / "model"), "--data", str(open_dir / "data.csv")]
    rc, err = _cli(argv, capsys)  # readable: works (and every lazy import is done before the uid drops)
    assert rc == 0, err
    (open_dir / target).chmod(0)
    with _unprivileged():
        if os.access(open_dir / target, os.R_OK, effective_ids=True):
            pytest.skip("this process can read a chmod-000 file")
        rc, err = _cli(argv, capsys)
    _one_error(rc, err, pattern)


# ---------------------------------------------------------------------------------------------
# the dashboard: the Attention page and URL values


def _page_errors(at) -> list[str]:
    return [e.value for e in at.error] + [e.value for e in at.sidebar.error]


def test_attention_page_long_text_on_a_64_position_model(open_page):
    # old: the token limit stayed 128: "size of tensor a (102) must match ... (64)" traceback
    at = open_page("attention", text="good " * 100)
    assert _page_errors(at) == []
    assert any("cut to 64 tokens" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "64 tokens" in at.text_input(key="att.text").help


def test_attention_maps_clamp_to_the_model_positions(tiny_loaded):
    # old: RuntimeError (position embeddings of 64 rows read at 128 positions)
    from prunelens.analysis.attention import attention_maps

    maps = attention_maps(tiny_loaded, "good " * 500)
    assert len(maps.tokens) == tiny_loaded.model.config.max_position_embeddings and maps.truncated


URL_CASES = [
    # old: StreamlitAPIException "The `value` 5.0 is greater than the `max_value` 0.95" traceback
    ("sparsity-5", {"sparsity": "5"}, 0.95),
    # old: "The `value` -3.0 is less than the `min_value` 0.0" traceback
    ("sparsity-negative", {"sparsity": "-3"}, 0.0),
    # old: the slider took inf: traceback
    ("sparsity-inf", {"sparsity": "inf"}, 0.3),
    # old: an error message "sparsity must be in [0, 1), got nan" on a shared link
    ("sparsity-nan", {"sparsity": "nan"}, 0.3),
]


@pytest.mark.parametrize("query, expected", [c[1:] for c in URL_CASES], ids=[c[0] for c in URL_CASES])
def test_attention_page_url_slider_out_of_range(query, expected, open_page):
    at = open_page("attention", mask="magnitude", **query)
    assert _page_errors(at) == []
    assert at.slider(key="att.sparsity").value == pytest.approx(expected)


PATH_CASES = [
    # old: OSError ENAMETOOLONG from the model path: a traceback on the page
    ("model", r"model path '.*a+…' \(\d+ characters\) cannot be used\\?: File name too long"),
    # old: the same from the data path
    ("data", r"data path '.*a+…' \(\d+ characters\) cannot be used\\?: File name too long"),
]


@pytest.mark.parametrize("which, pattern", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_dashboard_overlong_url_paths(which, pattern, open_page):
    # inside the temp folder, which the tests' dashboard may read (PRUNELENS_DATA_ROOTS)
    value = os.path.join(tempfile.gettempdir(), LONG + (".csv" if which == "data" else ""))
    at = open_page("attention", **{which: value})
    errors = _page_errors(at)
    assert errors and any(re.search(pattern, e) for e in errors), [e[:300] for e in errors]


def test_attention_page_pair_on_a_one_token_type_model(open_page, models):
    # old: IndexError in the token-type embedding: a traceback on the page
    at = open_page("attention", model=str(models["one-token-type"]), pair="the plot")
    errors = _page_errors(at)
    assert any("has one token type (type_vocab_size=1)" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------
# attention maps never mix with another thread's gates


def test_attention_maps_not_mixed_with_a_concurrent_gated_forward(tiny_bert_dir):
    # old: the unmasked path hooked and ran the model without the model lock, so its forward could
    # run while another thread's gates were attached (layer 1 then sees layer 0's heads at 0) and
    # the other thread's forward overwrote its captured Q/K: maps differed from the ones taken alone
    from prunelens.analysis.attention import attention_maps
    from prunelens.analysis.gates import gated, hook_count
    from prunelens.analysis.models import load_model

    loaded = load_model(str(tiny_bert_dir))  # a private copy: no other test shares its lock
    text = "the movie was not very good but the actors were fun"
    alone = attention_maps(loaded, text).attention
    inv = loaded.inventory
    zero_layer0 = np.ones((inv.layers, inv.heads), dtype=np.float32)
    zero_layer0[0] = 0
    enc = loaded.tokenizer([text, "bad plot"], padding=True, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    stop, failures = threading.Event(), []

    def gate_and_run():
        try:
            while not stop.is_set():
                with gated(loaded.model, head=zero_layer0), torch.no_grad():
                    loaded.model(**inputs)
        except Exception as exc:  # pragma: no cover (reported below)
            failures.append(repr(exc))

    other = threading.Thread(target=gate_and_run, daemon=True)
    other.start()
    different = 0
    try:
        for _ in range(200):
            if not np.array_equal(attention_maps(loaded, text).attention, alone):
                different += 1
    finally:
        stop.set()
        other.join(timeout=60)
    assert failures == []
    assert different == 0, f"{different} of 200 maps differed from the ones taken alone"
    assert hook_count(loaded.model) == 0
    pruned = attention_maps(loaded, text, head_mask=zero_layer0).attention
    assert not np.array_equal(pruned[1], alone[1])  # the other thread's gates would have shown


WIDGET_CASES = [  # (page, URL values, widget key, value shown); old: each one a traceback on the page
    # old: "The `value` 5.0 is greater than the `max_value` 0.95" from the Prune slider
    ("prune", {"method": "magnitude", "sparsity": "5"}, "prune.sparsity", 0.95),
    ("prune", {"method": "magnitude", "sparsity": "-1"}, "prune.sparsity", 0.0),
    # old: NaN passed the (old) min/max clamp unchanged (max(nan, lo) is nan) into the slider
    ("prune", {"method": "magnitude", "mode": "threshold", "threshold": "nan"}, "prune.threshold", None),
    # old: the Compare page's overlap slider took 7
    ("compare", {"sparsity": "7"}, "cmp.sparsity", 0.95),
    # old: number_input refused cap 1e9 (max 1000) and NaN
    ("spectral", {"cap": "1e9"}, "spec.cap", 1000.0),
    ("spectral", {"cap": "nan"}, "spec.cap", 1.0),
]


@pytest.mark.parametrize("page, query, key, expected", WIDGET_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1].values())}" for c in WIDGET_CASES])
def test_url_values_outside_a_widget_are_clamped(page, query, key, expected, open_page):
    at = open_page(page, **query)
    assert not at.exception, [e.value for e in at.exception]
    assert _page_errors(at) == []
    value = at.session_state[key]
    if expected is None:  # the threshold's default: a finite value inside the slider
        assert np.isfinite(value)
    else:
        assert value == pytest.approx(expected)
