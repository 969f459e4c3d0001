"""Issue 18 item 12: the predictions that flip under a mask, and the export of the pruned model
(prunelens-loadable sliced weights + ONNX checked with onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prunelens.analysis import flips as flips_mod
from prunelens.analysis.flips import flipped, label_names
from prunelens.analysis.gates import Masks, gated

HEAD_MASK = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])


def _loop_predictions(loaded, texts, masks=None):
    """The hand computation: one sentence at a time, argmax of the HF forward's logits."""
    out = []
    with torch.inference_mode(), gated(loaded.model, masks or Masks()):
        for text in texts:
            enc = loaded.tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
            out.append(int(loaded.model(**enc).logits[0].argmax()))
    return np.array(out)


def _expected_rows(session, masks):
    data = session.data
    before = _loop_predictions(session.loaded, data.texts)
    after = _loop_predictions(session.loaded, data.texts, masks)
    return [{"index": i, "text": data.texts[i], "label": int(data.labels[i]),
             "before": int(before[i]), "after": int(after[i])}
            for i in range(len(data)) if before[i] != after[i]]


def test_flipped_rows_equal_a_plain_loop(tiny_session):
    expected = _expected_rows(tiny_session, Masks(head=HEAD_MASK))
    assert len(expected) > 0  # the mask really changes some predictions
    got = flipped(tiny_session, "head", HEAD_MASK)
    assert got["count"] == len(expected)
    assert got["rows"] == expected
    # the cap lists the first rows only; the count stays the full number
    capped = flipped(tiny_session, "head", HEAD_MASK, cap=1)
    assert capped["rows"] == expected[:1] and capped["count"] == len(expected)
    # the unpruned mask flips nothing
    assert flipped(tiny_session, "head", np.ones((2, 4), int)) == {"count": 0, "rows": [], "cap": 200}


def test_flipped_neurons_equal_a_plain_loop(tiny_session):
    mask = np.ones((2, 24), int)
    mask[:, ::2] = 0
    expected = _expected_rows(tiny_session, Masks(neuron=mask))
    got = flipped(tiny_session, "neuron", mask)
    assert got["rows"] == expected and got["count"] == len(expected)


def test_masked_predictions_come_from_the_store_the_second_time(tiny_session, monkeypatch):
    first = flipped(tiny_session, "head", HEAD_MASK)
    _ = tiny_session.evaluator.base_outputs

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(tiny_session.evaluator, "outputs", boom)
    assert flipped(tiny_session, "head", HEAD_MASK) == first


def test_label_names_from_the_model_config(tiny_session, monkeypatch):
    named = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(id2label={0: "negative", 1: "positive"})))
    generic = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"})))
    assert label_names(named) == {0: "negative", 1: "positive"}
    assert label_names(generic) is None
    assert label_names(tiny_session.loaded) is None  # the tiny BERT has LABEL_i: ints are shown
    monkeypatch.setattr(flips_mod, "label_names", lambda loaded: {0: "neg", 1: "pos"})
    rows = flipped(tiny_session, "head", HEAD_MASK)["rows"]
    ints = _expected_rows(tiny_session, Masks(head=HEAD_MASK))
    names = {0: "neg", 1: "pos"}
    assert rows == [{**r, "label": names[r["label"]], "before": names[r["before"]],
                     "after": names[r["after"]]} for r in ints]


def test_flipped_rows_carry_the_text_pair(tiny_loaded, tmp_path, store):
    from prunelens.analysis.operations import open_session
    from tests.tiny import write_tiny_csv

    session = open_session(data=str(write_tiny_csv(tmp_path / "pairs.csv", pairs=True)),
                           loaded=tiny_loaded, store=store)
    rows = flipped(session, "head", HEAD_MASK)["rows"]
    assert rows, "expected some flips on the pair data"
    for r in rows:
        assert list(r) == ["index", "text", "text_pair", "label", "before", "after"]
        assert r["text_pair"] == session.data.text_pairs[r["index"]]


def test_prune_json_has_flipped(tiny_session):
    from prunelens.analysis.operations import prune

    out = prune(tiny_session, "magnitude", 0.5)
    mask = np.asarray(out["mask"])
    expected = _expected_rows(tiny_session, Masks(head=mask))
    assert out["flipped"] == expected
    assert out["flipped_count"] == len(expected)
    assert "flipped" not in prune(tiny_session, "magnitude", 0.5, flips=False)


def test_cli_prune_prints_and_writes_flipped(tiny_bert_dir, tiny_csv, store, tmp_path, capsys):
    from prunelens.analysis.cli import main

    args = ["prune", "--method", "magnitude", "--sparsity", "0.5", "--model", str(tiny_bert_dir),
            "--data", str(tiny_csv), "--quiet"]
    assert main([*args, "--json", str(tmp_path / "p.json")]) == 0
    payload = json.loads((tmp_path / "p.json").read_text())
    assert payload["flipped_count"] == len(payload["flipped"])
    assert main(args) == 0
    n = payload["flipped_count"]
    line = f"  {n} prediction{'' if n == 1 else 's'} flipped"
    assert line in capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------------------------------------
# export


@pytest.mark.parametrize("unit, mask", [
    ("head", HEAD_MASK),
    ("head", np.array([[0, 0, 0, 0], [1, 0, 1, 1]])),  # a layer without any head left
    ("neuron", np.tile(np.arange(24) % 3 != 0, (2, 1)).astype(int)),
    ("attention", np.array([0, 1])),  # a whole block: its heads and its output bias go
    ("ffn", np.array([1, 0])),
])
def test_saved_pruned_model_loads_with_the_masked_logits(tiny_session, tmp_path, unit, mask):
    from prunelens.analysis.pruned_folder import save_pruned, structure_of
    from prunelens.analysis.models import load_model
    from prunelens.analysis.pruning import physically_prune

    masks = Masks.for_unit(unit, mask)
    small = physically_prune(tiny_session.loaded.model, masks)
    save_pruned(small, tiny_session.loaded.tokenizer, tmp_path / "out", {"unit": unit})
    manifest = json.loads((tmp_path / "out" / "prunelens_pruned.json").read_text())
    heads = {"head": mask.sum(1).tolist() if mask.ndim == 2 else None, "attention": [0, 4]}
    neurons = {"neuron": mask.sum(1).tolist() if mask.ndim == 2 else None, "ffn": [24, 0]}
    assert [r["heads"] for r in manifest["layers"]] == heads.get(unit, [4, 4])
    assert [r["neurons"] for r in manifest["layers"]] == neurons.get(unit, [24, 24])
    reloaded = load_model(str(tmp_path / "out"))
    assert structure_of(reloaded.model) == manifest["layers"]
    ev = tiny_session.evaluator
    masked = ev.reference_outputs(masks).logits
    again = ev.reference_outputs(model=reloaded.model).logits
    np.testing.assert_allclose(again, masked, atol=1e-5, rtol=0)
    # the reloaded model works through the ordinary evaluator too (its fast path declines)
    from prunelens.analysis.evaluate import Evaluator

    own = Evaluator(reloaded, tiny_session.data)
    np.testing.assert_allclose(own.base_outputs.logits, masked, atol=1e-5, rtol=0)
    assert reloaded.inventory.encoder_params == sum(
        p.numel() for layer in reloaded.layers() for p in layer.parameters())
    assert reloaded.inventory.encoder_params < tiny_session.loaded.inventory.encoder_params


def test_export_writes_weights_and_onnx_with_the_same_logits(tiny_session, tmp_path):
    pytest.importorskip("onnxruntime")
    from prunelens.analysis.export import export, ort_logits, ort_session
    from prunelens.analysis.models import load_model

    out = tmp_path / "export"
    report = export(tiny_session, "magnitude", 0.5, out, unit="head")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "prunelens_pruned.json", "model.onnx",
            "export.json", "tokenizer.json"} <= files
    assert json.loads((out / "export.json").read_text()) == report
    mask = np.asarray(report["mask"])
    masks = Masks(head=mask)
    ev = tiny_session.evaluator
    masked = ev.reference_outputs(masks).logits
    again = ev.reference_outputs(model=load_model(str(out)).model).logits
    np.testing.assert_allclose(again, masked, atol=1e-5, rtol=0)
    onnx_logits, _ = ort_logits(ort_session(out / "model.onnx"), ev.batches, len(tiny_session.data), 2)
    np.testing.assert_allclose(onnx_logits, masked, atol=1e-4, rtol=0)
    diff = report["max_abs_logit_difference"]
    assert diff["reloaded_vs_masked"] <= 1e-5 and diff["onnx_vs_torch_pruned"] <= 1e-4
    o = report["onnx"]
    assert o["examples"] == len(tiny_session.data)
    assert o["seconds_pruned"] > 0 and o["seconds_unpruned"] > 0
    assert o["speedup"] == pytest.approx(o["seconds_unpruned"] / o["seconds_pruned"], rel=0.01)
    assert report["encoder_params"]["pruned"] == (report["encoder_params"]["unpruned"]
                                                  - report["compression"]["removed"])


def test_cli_export_without_onnx_and_a_rerun_into_the_same_folder(tiny_bert_dir, tiny_csv, store,
                                                                  tmp_path, capsys):
    from prunelens.analysis.cli import main

    args = ["export", "--method", "magnitude", "--sparsity", "0.25", "--unit", "neuron",
            "--out", str(tmp_path / "e"), "--no-onnx", "--model", str(tiny_bert_dir),
            "--data", str(tiny_csv), "--quiet"]
    assert main(args) == 0
    report = json.loads((tmp_path / "e" / "export.json").read_text())
    assert report["unit"] == "neuron" and "onnx" not in report
    assert not (tmp_path / "e" / "model.onnx").exists()
    assert "reloaded vs masked max |logit diff|" in capsys.readouterr().out
    assert main(args) == 0  # an earlier export may be replaced


@pytest.mark.parametrize("extra, message", [
    (["--sparsity", "1.5", "--out", "{tmp}/x"], "error: sparsity must be in [0, 1), got 1.5"),
    (["--sparsity", "0.5", "--out", "{tmp}/missing/x"], "its parent folder does not exist"),
    (["--sparsity", "0.5", "--out", "{tmp}/full"], "is not empty and holds no earlier export"),
    (["--sparsity", "0.5", "--out", "{tmp}/x", "--unit", "bogus"], "error: method 'magnitude'"),
    (["--sparsity", "0.5", "--out", "{tmp}/x", "--param", "nope=1"], "has no parameter 'nope'"),
])
def test_cli_export_errors_before_loading(tmp_path, capsys, monkeypatch, extra, message):
    import prunelens.analysis.operations
    from prunelens.analysis.cli import main

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something.txt").write_text("x")

    def no_load(*a, **k):
        raise AssertionError("loaded a model before checking the arguments")

    monkeypatch.setattr(prunelens.analysis.operations, "open_session", no_load)
    argv = ["export", "--method", "magnitude", "--model", str(tmp_path / "no_model"),
            *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_a_broken_manifest_is_a_model_error(tiny_session, tmp_path):
    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.pruned_folder import save_pruned
    from prunelens.analysis.models import load_model
    from prunelens.analysis.pruning import physically_prune

    small = physically_prune(tiny_session.loaded.model, Masks(head=HEAD_MASK))
    save_pruned(small, tiny_session.loaded.tokenizer, tmp_path / "out", {})
    manifest = tmp_path / "out" / "prunelens_pruned.json"
    data = json.loads(manifest.read_text())
    data["layers"][0]["heads"] = 4  # no longer what the weights hold
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------
# dashboard


def test_prune_page_shows_the_flipped_table_and_exports(tiny_bert_dir, tiny_csv, tiny_session, tmp_path,
                                                         monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    app = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=180)
    at.query_params["model"] = str(tiny_bert_dir)
    at.query_params["data"] = str(tiny_csv)
    at.query_params["method"] = "magnitude"
    at.query_params["sparsity"] = "0.5"
    at.session_state["prunelens.page"] = "prune"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    expander = next(e for e in at.expander if e.label == "Predictions that flip")
    table = expander.dataframe[0].value
    assert list(table.columns) == ["index", "text", "label", "before", "after"]
    n, of = (int(w) for w in expander.markdown[0].value.strip("*").split()[:3:2])
    assert n == len(table) > 0 and of == 40
    # the same rows as the hand computation for the same (deterministic) magnitude mask
    from prunelens.analysis.operations import prune

    mask = np.asarray(prune(tiny_session, "magnitude", 0.5, flips=False)["mask"])
    assert table.to_dict("records") == _expected_rows(tiny_session, Masks(head=mask))
    at.checkbox(key="prune.export.onnx").uncheck()
    at.button(key="prune.export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    exp = next(e for e in at.expander if e.label == "Export the pruned model")
    assert any("Loaded again: largest logit difference to the masked model" in c.value
               for c in exp.caption)


def test_the_readme_install_has_what_export_needs():
    # issue 30 item 7: `pip install -e .` then the README's `prunelens export` failed without the extra
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert {"onnx", "onnxruntime", "onnxscript"} <= names
