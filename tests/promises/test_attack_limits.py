"""Robustness round 3 (issue 29): bounded memory for any input, no hangs on special files, one
clean line for every bad argument.

Each attack class of the held-out pass has cases here: memory that grew with the input (peak RSS
of a fresh subprocess, with a generous ceiling), special files (FIFOs) that hung a read,
internal errors instead of a clear line, arguments checked only after loading, silently wrong
answers, and leftovers/escapes. ``test_no_attack_reaches_an_internal_error`` runs the whole
command-line catalogue and ``test_every_attack_class_has_cases`` checks that it covers every
class.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_util import one_error as _one_error
from tests.cli_util import run_cli as _cli
from tests.tiny import write_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
NAME_300 = "n" * 300  # one path component past NAME_MAX (255)
PRUNE = ["prune", "--method", "magnitude", "--sparsity", "0.25", "--quiet"]


def _peak_rss_growth_mb(code: str, timeout: float = 240, setup: str = "") -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter (from the checkout) after the imports it needs and
    return how much its peak RSS (VmHWM, reset after the imports) rose above the RSS before
    ``code`` ran (MiB), and what it printed. ``setup`` runs before the measurement (imports a
    first call makes)."""
    script = (
        "import re, sys\n"
        "import prunelens.analysis.data, prunelens.analysis.models\n"
        "from prunelens.analysis.errors import PrunelensError\n"
        "def status(field):\n"
        "    return int(re.search(field + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
        + setup + "\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # the peak (VmHWM) restarts from now\n"
        "before = status('VmRSS')\n"
        "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
        "except PrunelensError as exc:\n"
        "    print('refused:', exc)\n"
        "print('GROWTH_KB', status('VmHWM') - before)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    growth = int(re.search(r"GROWTH_KB (\d+)", done.stdout).group(1)) / 1024
    return growth, done.stdout


# ---------------------------------------------------------------------------------------------
# class 1: memory follows what is asked, not the input (peak RSS, generous ceilings)

CEILING_MB = 150  # now 13-40 MiB (the file itself); old: 4.6 GB (2 M rows), 4 GB (wide CSV), 8 GB (manifest)


@pytest.fixture(scope="module")
def huge_inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("huge")
    rows = root / "rows.csv"  # 2 M short rows, 8 MB
    rows.write_bytes(b"text,label\n" + b"a,1\n" * 2_000_000)
    wide = root / "wide.csv"  # 3 M columns, 22 MB: one header line
    wide.write_bytes(b",".join(b"c%d" % i for i in range(3_000_000)) + b"\n" + b"1,1\n")
    many = root / "many_columns.csv"  # 100 k columns within one line's cap
    many.write_bytes(b",".join(b"c%d" % i for i in range(100_000)) + b"\n")
    jsonl = root / "rows.jsonl"  # 1 M records, 30 MB
    jsonl.write_bytes(b'{"text": "a", "label": 1}\n' * 1_000_000)
    return {"rows": rows, "wide": wide, "many": many, "jsonl": jsonl}


def test_many_short_rows_with_a_limit_stay_small(huge_inputs):
    # old: the whole file was parsed (2 M rows: 4.6 GB) before --limit applied
    growth, out = _peak_rss_growth_mb(
        f"data = prunelens.analysis.data.load_data({str(huge_inputs['rows'])!r}, limit=5)\n"
        "print('rows', len(data), data.labels.tolist())\n"
        f"raw = open({str(huge_inputs['rows'])!r}, 'rb').read()\n"
        "up = prunelens.analysis.data.from_bytes(raw, 'up.csv', limit=5)\n"
        "print('upload rows', len(up))")
    assert "rows 5 [1, 1, 1, 1, 1]" in out and "upload rows 5" in out, out
    assert growth < CEILING_MB, f"peak RSS grew by {growth:.0f} MiB"


def test_many_rows_without_a_limit_are_refused_at_the_cap(huge_inputs):
    growth, out = _peak_rss_growth_mb(
        f"prunelens.analysis.data.load_data({str(huge_inputs['rows'])!r})")
    assert re.search(r"refused: rows\.csv has over 200,000 rows, the cap on rows read \(use --limit N", out), out
    assert growth < CEILING_MB, f"peak RSS grew by {growth:.0f} MiB"


def test_a_very_wide_csv_is_refused_small(huge_inputs):
    # old: pandas built a 3 M column frame (4 GB) even with --limit 1
    growth, out = _peak_rss_growth_mb(
        f"prunelens.analysis.data.load_data({str(huge_inputs['wide'])!r}, limit=1)")
    assert re.search(r"refused: wide\.csv line 1 is over 1,048,576 characters", out), out
    assert growth < CEILING_MB, f"peak RSS grew by {growth:.0f} MiB"
    with pytest.raises(Exception, match=r"many_columns\.csv has 100,000 columns, over the cap of 64"):
        from prunelens.analysis.data import load_data

        load_data(str(huge_inputs["many"]), limit=1)


def test_a_long_jsonl_with_a_limit_stays_small(huge_inputs):
    growth, out = _peak_rss_growth_mb(
        f"data = prunelens.analysis.data.load_data({str(huge_inputs['jsonl'])!r}, limit=3)\n"
        "print('rows', len(data))")
    assert "rows 3" in out, out
    assert growth < CEILING_MB, f"peak RSS grew by {growth:.0f} MiB"


@pytest.fixture(scope="module")
def pruned_folder(tiny_loaded, tmp_path_factory) -> Path:
    from prunelens.analysis.pruned_folder import save_pruned

    folder = tmp_path_factory.mktemp("pruned") / "export"
    save_pruned(tiny_loaded.model, tiny_loaded.tokenizer, folder, {"method": "magnitude"})
    return folder


def _manifest_variant(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "prunelens_pruned.json").read_text())
    edit(manifest)
    (dst / "prunelens_pruned.json").write_text(json.dumps(manifest))
    return dst


def test_a_crafted_manifest_is_refused_before_allocating(pruned_folder, tmp_path):
    # old: the manifest's head counts were allocated before any check (huge counts: 8 GB)
    def huge(manifest):
        manifest["layers"][0]["heads"] = 10**9

    folder = _manifest_variant(pruned_folder, tmp_path / "huge_heads", huge)
    growth, out = _peak_rss_growth_mb(f"prunelens.analysis.models.load_model({str(folder)!r})",
                                      setup=f"prunelens.analysis.models.load_model({str(pruned_folder)!r})")
    assert re.search(r"refused: .*prunelens_pruned\.json: layer 0 has heads = 1000000000, not a whole "
                     r"number in 0\.\.4 \(export the model again\)", out), out
    assert growth < CEILING_MB, f"peak RSS grew by {growth:.0f} MiB"


MANIFEST_CASES = [
    ("negative-neurons", lambda m: m["layers"][1].update(neurons=-5), r"layer 1 has neurons = -5, not a whole number in 0\.\.24"),
    ("text-heads", lambda m: m["layers"][0].update(heads="four"), r"layer 0 has heads = 'four', not a whole number"),
    ("fraction-heads", lambda m: m["layers"][0].update(heads=2.5), r"layer 0 has heads = 2\.5, not a whole number"),
    ("layers-not-a-list", lambda m: m.update(layers={"0": 1}), r"has no list of layers but the config has 2"),
    ("wrong-head-size", lambda m: m.update(head_size=10**6), r"has head_size = 1000000 but the config gives 4"),
]


@pytest.mark.parametrize("edit, pattern", [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_fields_are_one_line(edit, pattern, pruned_folder, tiny_csv, tmp_path, isolated, capsys):
    folder = _manifest_variant(pruned_folder, tmp_path / "variant", edit)
    rc, _, err = _cli(PRUNE + ["--model", str(folder), "--data", str(tiny_csv)], capsys)
    _one_error(rc, err, pattern)


def test_the_validator_is_one_function_for_config_and_manifest():
    from prunelens.analysis import model_bounds, models, pruned_folder

    assert models.check_config_bounds is model_bounds.check_config_bounds
    assert pruned_folder.check_manifest_bounds is model_bounds.check_manifest_bounds


# ---------------------------------------------------------------------------------------------
# class 2: special files never block a read


@pytest.fixture()
def unblock():
    """Open every FIFO handed to it for writing after 15 s, so a reader that blocked on it gets
    end-of-file and the test fails on its assertions instead of hanging the suite."""
    fifos: list[Path] = []
    stop = threading.Event()

    def rescue():
        if stop.wait(15):
            return
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    yield fifos.append
    stop.set()


def _with_fifo(src: Path, dst: Path, name: str) -> Path:
    shutil.copytree(src, dst)
    (dst / name).unlink()
    os.mkfifo(dst / name)
    return dst


@pytest.mark.parametrize("name, pattern", [
    ("config.json", r"cannot read config\.json of model .*: it is not a regular file"),
    ("model.safetensors", r"cannot read model\.safetensors of model .*: it is not a regular file"),
    ("tokenizer.json", r"cannot read tokenizer\.json of model .*: it is not a regular file"),
], ids=["config", "weights", "tokenizer"])
def test_a_fifo_in_a_model_folder_is_refused_unread(name, pattern, tiny_bert_dir, tiny_csv, tmp_path,
                                                   isolated, unblock, capsys):
    # old: a FIFO as config.json or as the weights blocked the CLI for good
    folder = _with_fifo(tiny_bert_dir, tmp_path / "fifo_model", name)
    unblock(folder / name)
    rc, _, err = _cli(PRUNE + ["--model", str(folder), "--data", str(tiny_csv)], capsys)
    line = _one_error(rc, err, pattern)
    assert "loading model" not in err.split(line)[0]  # refused before loading


def test_a_fifo_as_data_or_sweep_spec_is_refused_unread(tiny_bert_dir, tmp_path, isolated, unblock, capsys):
    data = tmp_path / "data.csv"
    os.mkfifo(data)
    unblock(data)
    rc, _, err = _cli(PRUNE + ["--model", str(tiny_bert_dir), "--data", str(data)], capsys)
    _one_error(rc, err, r"cannot read data file data\.csv: it is not a regular file")
    spec = tmp_path / "spec.toml"
    os.mkfifo(spec)
    unblock(spec)
    rc, _, err = _cli(["sweep", str(spec), "--quiet"], capsys)
    _one_error(rc, err, r"cannot read sweep spec .*spec\.toml.*: it is not a regular file")


def test_a_fifo_as_data_on_the_page_is_a_message(open_page, tmp_path, unblock):
    data = tmp_path / "data.csv"
    os.mkfifo(data)
    unblock(data)
    at = open_page("model_data", data=str(data))
    errors = [e.value for e in at.error]
    assert any("is not a regular file" in e for e in errors), errors


def test_the_reader_opens_without_blocking_and_checks_the_descriptor(tmp_path, monkeypatch):
    """A file swapped for a FIFO between the stat and the open is refused too (and the open
    itself does not block: no writer ever comes)."""
    from prunelens.analysis import files
    from prunelens.analysis.errors import DataError

    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    monkeypatch.setattr(files, "regular_size", lambda *args: 0)  # the stat said: a regular file
    with pytest.raises(DataError, match="not a regular file"):
        files.read_regular(fifo, 1 << 20, "swapped", DataError)


# ---------------------------------------------------------------------------------------------
# class 3: every failure is one line (CLI) or a message (page), never an internal error


class Panic(BaseException):
    """Stands in for pyo3_runtime.PanicException, which a Rust panic raises (no Exception)."""


Panic.__name__ = "PanicException"


def test_a_tokenizer_panic_is_one_line_naming_the_file(tiny_bert_dir, tiny_csv, isolated, monkeypatch, capsys):
    import transformers

    def panic(*args, **kwargs):
        raise Panic("called `Result::unwrap()` on an `Err` value: regex")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", panic)
    rc, _, err = _cli(PRUNE + ["--model", str(tiny_bert_dir), "--data", str(tiny_csv)], capsys)
    _one_error(rc, err, r"the tokenizer of model .* panicked while loading: 'called `Result::unwrap\(\)`.*"
                        r"\(file '.*tokenizer\.json'; fix or replace the model's tokenizer files\)")


def test_a_tokenizer_panic_while_tokenizing_is_a_model_error(tiny_loaded, tiny_csv):
    from prunelens.analysis.data import load_data, tokenize_batches
    from prunelens.analysis.errors import ModelError

    class Panicking:
        name_or_path = tiny_loaded.tokenizer.name_or_path
        model_max_length = 64

        def __call__(self, *args, **kwargs):
            raise Panic("byte index 3 is not a char boundary")

    with pytest.raises(ModelError, match=r"panicked while tokenizing: 'byte index 3 .*tokenizer\.json"):
        tokenize_batches(Panicking(), load_data(str(tiny_csv)))


def _deep_config(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return dst


def _sweep_spec(tmp: Path, text: str, name: str = "spec.toml") -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _port_in_use() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


# (id, class, argv builder (tmp, model, data) -> argv, pattern of the one error line)
ATTACKS = [
    # memory: refused at a cap, in one line
    ("rows-over-cap", "memory", lambda t, m, d: PRUNE + ["--model", m, "--data", _rows(t, 200_001)],
     r"has over 200,000 rows, the cap on rows read"),
    ("wide-csv", "memory", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(t, "w.csv", "c," * 70 + "\n")],
     r"w\.csv has 71 columns, over the cap of 64"),
    ("json-array-over-cap", "memory", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "big.json", "[" + ",".join(['{"text": "aaaa", "label": 1}'] * 300_000) + "]")],
     r"big\.json is \d+ MB, over the 8 MB cap for a \.json array \(write one object per line as \.jsonl"),
    ("manifest-huge-heads", "memory", lambda t, m, d: PRUNE + ["--model", _huge_manifest(t), "--data", d],
     r"layer 0 has heads = 1000000000"),
    # special files
    ("fifo-config", "special-file", lambda t, m, d: PRUNE + ["--model", _fifo_model(m, t, "config.json"), "--data", d],
     r"cannot read config\.json of model .*it is not a regular file"),
    ("fifo-weights", "special-file", lambda t, m, d: PRUNE + ["--model", _fifo_model(m, t, "model.safetensors"),
                                                            "--data", d], r"it is not a regular file"),
    ("fifo-data", "special-file", lambda t, m, d: PRUNE + ["--model", m, "--data", _fifo(t / "f.csv")],
     r"cannot read data file f\.csv: it is not a regular file"),
    # internal errors -> one line
    ("deep-json-config", "internal", lambda t, m, d: PRUNE + ["--model", str(_deep_config(Path(m), t / "deep")),
                                                            "--data", d],
     r"cannot read config of .*config\.json is nested too deeply"),
    ("deep-toml-spec", "internal", lambda t, m, d: ["sweep", _sweep_spec(t, "a = " + "[" * 100_000 + "]" * 100_000)],
     r"sweep spec .* is (nested too deeply|not valid TOML)"),
    ("deep-jsonl-row", "internal", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "deep.jsonl", '{"text": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n")],
     r"could not parse deep\.jsonl: line 1 is nested too deeply"),
    ("export-out-unknown-user", "internal", lambda t, m, d: ["export", "--method", "magnitude", "--sparsity", "0.5",
                                                           "--no-onnx", "--model", m, "--data", d,
                                                           "--out", "~nosuchuser/x"],
     r"--out path '~nosuchuser/x': there is no user 'nosuchuser'"),
    ("export-out-too-long", "internal", lambda t, m, d: ["export", "--method", "magnitude", "--sparsity", "0.5",
                                                       "--no-onnx", "--model", m, "--data", d,
                                                       "--out", str(t / NAME_300)],
     r"--out path '.*…' \(\d+ characters\) cannot be used: File name too long \(give a shorter path\)"),
    ("store-unknown-user", "internal", lambda t, m, d: ["analyze", "--model", m, "--data", d, "--dry-run",
                                                      "--store", "~nosuchuser/store"],
     r"--store path '~nosuchuser/store': there is no user"),
    ("sweep-store-too-long", "internal", lambda t, m, d: ["sweep", "examples/sweep-small.toml", "--dry-run",
                                                        "--store", str(t / NAME_300)],
     r"--store path .* cannot be used: File name too long"),
    ("sweep-spec-unknown-user", "internal", lambda t, m, d: ["sweep", "~nosuchuser/spec.toml"],
     r"sweep spec path '~nosuchuser/spec\.toml': there is no user"),
    ("sweep-spec-path-too-long", "internal", lambda t, m, d: ["sweep", str(t / (NAME_300 + ".toml"))],
     r"sweep spec path .* cannot be used: File name too long"),
    ("sweep-model-unknown-user", "internal", lambda t, m, d: ["sweep", _sweep_spec(
        t, 'models = ["~nosuchuser/m"]\nmethods = ["magnitude"]\n'), "--dry-run"],
     r"model path '~nosuchuser/m': there is no user"),
    ("sweep-data-too-long", "internal", lambda t, m, d: ["sweep", _sweep_spec(
        t, f'data = ["{NAME_300}.csv"]\nmethods = ["magnitude"]\n'), "--dry-run"],
     r"data path '.*n+…' \(\d+ characters\) cannot be used: File name too long"),
    ("manifest-negative-field", "internal", lambda t, m, d: PRUNE + ["--model", _manifest_with(
        t, lambda mf: mf["layers"][0].update(neurons=-1)), "--data", d], r"layer 0 has neurons = -1"),
    ("manifest-text-field", "internal", lambda t, m, d: PRUNE + ["--model", _manifest_with(
        t, lambda mf: mf["layers"][0].update(heads="x")), "--data", d], r"layer 0 has heads = 'x'"),
    ("dashboard-host-unresolvable", "internal", lambda t, m, d: ["dashboard", "--host", "no-such-host.invalid"],
     r"--host 'no-such-host\.invalid' cannot be resolved"),
    ("dashboard-host-foreign", "internal", lambda t, m, d: ["dashboard", "--host", "192.0.2.1"],
     r"--host '192\.0\.2\.1' is not an address of this machine"),
    ("dashboard-port-in-use", "internal", lambda t, m, d: ["dashboard", "--port", str(_busy_port())],
     r"--port \d+ is in use on '127\.0\.0\.1'"),
    # checked before loading
    ("limit-minus-one", "before-loading", lambda t, m, d: PRUNE + ["--model", m, "--data", d, "--limit", "-1"],
     r"--limit must be a positive number of examples, got -1"),
    ("model-folder-missing", "before-loading", lambda t, m, d: PRUNE + ["--model", str(t / "nothere"), "--data", d],
     r"model folder not found: .*nothere"),
    # silently wrong
    ("mixed-labels", "silently-wrong", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "mixed.csv", "text,label\ngood,1\nbad,neg\nfun,pos\n")],
     r"labels that mix numbers and class names \('1', 'neg', 'pos'\)"),
    ("jsonl-object-text", "silently-wrong", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "obj.jsonl", '{"text": {"a": 1}, "label": 1}\n{"text": "b", "label": 0}\n')],
     r"obj\.jsonl line 1 has a text that is an object, not a string"),
    ("jsonl-list-text", "silently-wrong", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "list.jsonl", '{"text": "a", "label": 1}\n{"text": ["b"], "label": 0}\n')],
     r"list\.jsonl line 2 has a text that is a list, not a string"),
    ("layer-norm-eps-negative", "silently-wrong", lambda t, m, d: PRUNE + ["--model", _config_with(
        m, t, layer_norm_eps=-1e-12), "--data", d], r"layer_norm_eps = -1e-12 is not a number in \(0, 1\]"),
    ("nan-weights", "silently-wrong", lambda t, m, d: PRUNE + ["--model", _nan_weights(m, t), "--data", d],
     r"gives NaN logits on \d+ of \d+ examples .*without any pruning"),
    ("duplicate-param", "silently-wrong", lambda t, m, d: ["score", "--method", "random", "--param", "seed=1",
                                                         "--param", "seed=2", "--model", m, "--data", d],
     r"--param 'seed' is given twice \('1' and '2'; give each parameter once\)"),
    ("empty-sparsities", "silently-wrong", lambda t, m, d: ["curve", "--methods", "magnitude", "--sparsities", "",
                                                          "--model", m, "--data", d],
     r"--sparsities is empty"),
    ("model-empty", "silently-wrong", lambda t, m, d: PRUNE + ["--model", "", "--data", d], r"the model is empty"),
    ("model-blank", "silently-wrong", lambda t, m, d: PRUNE + ["--model", "   ", "--data", d], r"the model is empty"),
    # escapes: a control character in a name never reaches the terminal raw
    ("ansi-file-name", "escapes", lambda t, m, d: PRUNE + ["--model", m, "--data", _file(
        t, "x\x1b[31mred\nline.csv", "")], r"data file x\\x1b\[31mred\\nline\.csv is empty"),
]


def _file(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _rows(tmp: Path, n: int) -> str:
    (tmp / "rows.csv").write_bytes(b"text,label\n" + b"a,1\n" * n)
    return str(tmp / "rows.csv")


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    _FIFOS.append(path)
    return str(path)


def _fifo_model(model: str, tmp: Path, name: str) -> str:
    folder = _with_fifo(Path(model), tmp / f"fifo_{name}", name)
    _FIFOS.append(folder / name)
    return str(folder)


_FIFOS: list[Path] = []
_LISTENERS: list[socket.socket] = []


def _busy_port() -> int:
    listener, port = _port_in_use()
    _LISTENERS.append(listener)
    return port


def _config_with(model: str, tmp: Path, **fields) -> str:
    folder = tmp / "config_variant"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _nan_weights(model: str, tmp: Path) -> str:
    from safetensors.torch import load_file, save_file

    folder = tmp / "nan_weights"
    shutil.copytree(model, folder)
    state = load_file(str(folder / "model.safetensors"))
    state["classifier.bias"] = state["classifier.bias"] * float("nan")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


_PRUNED: list[Path] = []


def _manifest_with(tmp: Path, edit) -> str:
    return str(_manifest_variant(_PRUNED[0], tmp / "manifest_variant", edit))


def _huge_manifest(tmp: Path) -> str:
    return _manifest_with(tmp, lambda mf: mf["layers"][0].update(heads=10**9))


ATTACK_CLASSES = {"memory", "special-file", "internal", "before-loading", "silently-wrong", "escapes"}


@pytest.mark.parametrize("build, pattern", [c[2:] for c in ATTACKS], ids=[c[0] for c in ATTACKS])
def test_no_attack_reaches_an_internal_error(build, pattern, tiny_bert_dir, tiny_csv, pruned_folder, tmp_path,
                                             isolated, monkeypatch, unblock, capsys):
    """Every case of the attack catalogue: exit 2, one ``error:`` line, never ``internal error``,
    and whatever it names, not a raw control character."""
    import prunelens.analysis.cli

    _PRUNED[:] = [pruned_folder]
    monkeypatch.chdir(ROOT)
    started = []
    monkeypatch.setattr(prunelens.analysis.cli.os, "execve", lambda *a: started.append(a))
    argv = build(tmp_path, str(tiny_bert_dir), str(tiny_csv))
    for fifo in _FIFOS:
        unblock(fifo)
    try:
        rc, out, err = _cli(argv, capsys)
    finally:
        _FIFOS.clear()
        for listener in _LISTENERS:
            listener.close()
        _LISTENERS.clear()
    _one_error(rc, err, pattern)
    assert not started, "the dashboard server was started"
    assert "\x1b" not in err + out


def test_every_attack_class_has_cases():
    classes = {c[1] for c in ATTACKS}
    assert classes == ATTACK_CLASSES, classes ^ ATTACK_CLASSES
    assert len({c[0] for c in ATTACKS}) == len(ATTACKS)


# ---------------------------------------------------------------------------------------------
# class 4: every argument is checked before anything loads (one line before "loading ...")


@pytest.mark.parametrize("argv, message", [
    (PRUNE + ["--limit", "-1"], "--limit must be a positive number of examples, got -1"),
    (PRUNE + ["--model", "/no/such/model/folder"], "model folder not found: /no/such/model/folder"),
    (PRUNE + ["--model", ""], "the model is empty"),
    (PRUNE + ["--model", "   "], "the model is empty"),
    (PRUNE + ["--data", "/no/such/data.csv"], "data file not found: /no/such/data.csv"),
    (PRUNE + ["--data", "glue:nope"], "unknown GLUE task 'nope'"),
    (["score", "--method", "random", "--param", "seed=1", "--param", "seed=1"], "is given twice"),
    (["curve", "--methods", "magnitude", "--sparsities", " , "], "--sparsities is empty"),
])
def test_arguments_are_refused_before_loading(argv, message, no_loading, capsys):
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert "loading model" not in err


# ---------------------------------------------------------------------------------------------
# class 5: nothing silently wrong


def test_mixed_labels_pass_when_the_models_own_names_decide(tmp_path):
    from prunelens.analysis.data import load_data
    from prunelens.analysis.errors import DataError
    from prunelens.analysis.models import load_model

    named = write_tiny_bert(tmp_path / "named")
    config = json.loads((named / "config.json").read_text())
    config.update(id2label={"0": "neg", "1": "1"}, label2id={"neg": 0, "1": 1})
    (named / "config.json").write_text(json.dumps(config))
    path = tmp_path / "mixed.csv"
    path.write_text("text,label\ngood,1\nbad,neg\nfun,1\n")
    data = load_model(str(named)).fit_data(load_data(str(path)))
    assert data.labels.tolist() == [1, 0, 1] and not data.mixed_labels
    with pytest.raises(DataError, match="mix numbers and class names"):
        load_model(str(write_tiny_bert(tmp_path / "plain"))).fit_data(load_data(str(path)))


def test_text_labels_are_numbered_over_the_whole_file_under_a_limit(tmp_path):
    # with --limit 1 the first row's "pos" keeps the id it has in the whole file (neg=0, pos=1)
    from prunelens.analysis.data import load_data

    path = tmp_path / "names.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\n")
    assert load_data(str(path), limit=1).labels.tolist() == [1]
    assert load_data(str(path)).labels.tolist() == [1, 0]


def test_a_sparsity_that_removes_everything_is_capped_with_a_note(tiny_bert_dir, tiny_csv, isolated, capsys):
    from prunelens.analysis.pruning import select

    assert select([[1.0, 2.0], [3.0, 4.0]], sparsity=0.9999).sum() == 1
    assert select([[1.0, 2.0], [3.0, 4.0]], sparsity=0.9999, scope="layer").tolist() == [[0, 1], [0, 1]]
    rc, out, err = _cli(["prune", "--method", "magnitude", "--unit", "attention", "--sparsity", "0.9999",
                         "--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet",
                         "--json", str(isolated / "out.json")], capsys)
    assert rc == 0, err
    assert "note: sparsity 0.9999 would remove all 2 units: capped to 1, keeping one" in err
    written = json.loads((isolated / "out.json").read_text())
    assert written["sparsity"] == 0.5 and any("capped to 1" in n for n in written["notes"])


def test_nan_is_never_written_into_json(tiny_bert_dir, tmp_path, isolated, capsys):
    # old: 1-row data wrote bare NaN (a standard error of one example) into the JSON
    one = tmp_path / "one.csv"
    one.write_text("text,label\ngood movie,1\n")
    out = tmp_path / "out.json"
    rc, _, err = _cli(["prune", "--method", "magnitude", "--sparsity", "0.25", "--model", str(tiny_bert_dir),
                       "--data", str(one), "--quiet", "--json", str(out)], capsys)
    assert rc == 0, err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = json.loads(text)
    assert payload["delta"]["accuracy_se"] is None
    assert any("written as null" in n for n in payload["notes"])
    assert "written as null" in err


def test_a_link_with_too_many_query_keys_is_reported_on_the_page(tiny_bert_dir, tiny_csv, isolated):
    # old: Streamlit dropped the whole query string (model= and data= too) without a word
    from streamlit.testing.v1 import AppTest

    from prunelens.dashboard.loading import CHOICE_KEY, Choice
    from tests.conftest import APPTEST_TIMEOUT, DASHBOARD_APP

    at = AppTest.from_file(DASHBOARD_APP, default_timeout=APPTEST_TIMEOUT)
    for i in range(1001):
        at.query_params[f"k{i}"] = "1"
    at.query_params["model"] = str(tiny_bert_dir)
    # (the session's choice is the tiny model, so the dropped link does not load the default)
    at.session_state[CHOICE_KEY] = Choice(model=str(tiny_bert_dir), data=str(tiny_csv))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any("This link's settings were ignored" in w and "parameters" in w for w in warnings), warnings


def test_a_300_character_model_name_in_a_link_is_a_message(open_page):
    # old: Path.exists() raised OSError (File name too long) in the sidebar: a traceback page
    at = open_page("model_data", model=NAME_300)
    errors = [e.value for e in at.error]
    assert errors and not at.exception, errors


# ---------------------------------------------------------------------------------------------
# class 6: clean-up and containment


def test_sweep_workers_die_with_their_driver(tmp_path):
    # old: after SIGKILL of a `sweep --workers 2` driver its workers stayed alive (2 GB)
    script = (
        "import os, sys, time\n"
        "from prunelens.analysis.sweep.executors import PoolExecutor\n"
        "pool = PoolExecutor(2, 1, 'cpu', (None, None))\n"
        "print(' '.join(str(p) for p in pool._pool._processes), flush=True)\n"
        "time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        workers = [int(p) for p in driver.stdout.readline().split()]
        assert len(workers) == 2, workers
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60
        alive = list(workers)
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [p for p in alive if _running(p)]
        assert not alive, f"workers {alive} outlived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _shard(store, key):
    path = store._path(store.user_dir, key)
    return path.parent, path


def test_orphan_temp_files_are_swept(store):
    from prunelens.analysis.cache import ORPHAN_TMP_AGE_S, Key

    key = Key.make("m", "d", "scores", "magnitude", "head")
    shard, _ = _shard(store, key)
    shard.mkdir(parents=True)
    old, fresh = shard / f".{key.digest[:12]}.abc.tmp", shard / f".{key.digest[:12]}.def.tmp"
    old.write_text("{half")
    fresh.write_text("{half")
    past = time.time() - ORPHAN_TMP_AGE_S - 10
    os.utime(old, (past, past))
    assert store.put(key, {"scores": [[1.0]]})
    assert not old.exists(), "an orphan temp file older than the age limit stayed"
    assert fresh.exists(), "a live writer's temp file was removed"


def test_the_store_never_writes_through_a_symlinked_shard(store, tmp_path):
    from prunelens.analysis.cache import Key, StoreWarning

    key = Key.make("m", "d", "scores", "magnitude", "head")
    shard, path = _shard(store, key)
    outside = tmp_path / "outside"
    outside.mkdir()
    shard.parent.mkdir(parents=True)
    shard.symlink_to(outside, target_is_directory=True)
    with pytest.warns(StoreWarning, match="symbolic link"):
        assert not store.put(key, {"scores": [[1.0]]})
    assert list(outside.iterdir()) == []


def test_listings_read_only_the_first_bytes_of_junk_and_other_kinds(store, monkeypatch):
    # old: ten 28 MB junk entries were read and parsed whole on every Training page run
    from prunelens.analysis import cache
    from prunelens.analysis.cache import LISTING_PEEK_BYTES, MAX_LISTED_BYTES, Key

    key = Key.make("m", "d", "scores", "magnitude", "head")
    assert store.put(key, {"scores": [[1.0]]})
    for i in range(10):
        junk = store.user_dir / f"{i:02x}" / f"{'%02x' % i}{'0' * 62}.json"
        junk.parent.mkdir(parents=True, exist_ok=True)
        junk.write_bytes(b"x" * (MAX_LISTED_BYTES + 1 if i % 2 else 1 << 20))
    parsed = []
    real = cache._read_regular_file
    monkeypatch.setattr(cache, "_read_regular_file", lambda p: parsed.append(p) or real(p))
    assert store.entries("train-run") == []
    assert parsed == []  # junk and other kinds: only LISTING_PEEK_BYTES looked at
    assert [e["key"]["kind"] for e in store.entries("scores")] == ["scores"]
    assert len(parsed) == 1 and LISTING_PEEK_BYTES < 1 << 20


def test_a_model_folder_file_linked_outside_the_roots_is_refused(tiny_bert_dir, tmp_path, monkeypatch):
    from prunelens.analysis.errors import ModelError
    from prunelens.dashboard import data_roots

    root = tmp_path / "root"
    folder = root / "model"
    folder.mkdir(parents=True)
    for f in tiny_bert_dir.iterdir():
        (folder / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, folder)
    monkeypatch.setenv(data_roots.ENV, str(root))
    with pytest.raises(ModelError, match=r"'model\.safetensors' in it is a link to a file outside"):
        data_roots.model_spec(str(folder))
    (folder / "model.safetensors").unlink()
    shutil.copy(tiny_bert_dir / "model.safetensors", folder)
    assert data_roots.model_spec(str(folder)) == str(folder)


def test_notes_and_labels_reach_the_terminal_escaped(tiny_bert_dir, tmp_path, isolated, capsys):
    path = tmp_path / "labels.csv"
    path.write_text("text,label\n" + "good movie,\x1b[2Jpos\nbad film,neg\n" * 4)
    rc, out, err = _cli(PRUNE + ["--model", str(tiny_bert_dir), "--data", str(path)], capsys)
    assert rc == 0, err
    assert "\x1b" not in err + out and "\\x1b[2Jpos=0" in err
