"""The JSON contract: every ``--json`` output carries its schema and the version, and real
outputs of every kind match analysis/json_outputs.py, which docs/JSON.md is generated from."""

from __future__ import annotations

import json
from pathlib import Path

from prunelens import __version__
from prunelens.analysis.cli import build_parser, main
from prunelens.analysis.json_outputs import KINDS, markdown, problems, stamp
from tests.unit.test_sweep import ADMM_SHORT, write_spec

ROOT = Path(__file__).resolve().parents[2]


def test_docs_json_md_is_generated_from_the_declarations():
    assert (ROOT / "docs" / "JSON.md").read_text() == markdown(), (
        "regenerate it: python -m prunelens.analysis.json_outputs > docs/JSON.md")


def test_every_subcommand_with_json_output_has_a_kind():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    writers = {name for name, p in sub.choices.items()
               if any(a.dest == "json" for a in p._actions)}
    assert writers == set(KINDS)


def test_the_checker_finds_what_is_wrong():
    good = stamp("curve", {"rows": [{"method": "random", "sparsity": 0.5, "accuracy": 0.5,
                                     "loss": 0.7, "margin": 0.1}]})
    assert problems(good) == [] and list(good)[:2] == ["schema", "version"]
    assert good["schema"] == "prunelens.curve/1" and good["version"] == __version__
    assert problems({**good, "extra": 1}) == ["curve: undeclared field 'extra'"]
    assert problems({**good, "schema": "prunelens.curve/2"}) == ["unknown schema 'prunelens.curve/2'"]
    row = {**good["rows"][0], "accuracy": "high"}
    assert problems({**good, "rows": [row]}) == ["curve.rows[0].accuracy: str is not number"]
    del row["accuracy"]
    assert problems({**good, "rows": [row]}) == ["curve.rows[0]: missing 'accuracy'"]
    assert problems([good]) == ["an output is an object, got list"]


def test_real_outputs_of_every_kind_match_their_declaration(tmp_path, tiny_bert_dir, tiny_csv, store):
    common = ["--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet"]
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv, '[methods.magnitude]\n')
    runs = {
        "methods": ["methods"],
        "score": ["score", "--method", "magnitude", *common],
        "prune": ["prune", "--method", "magnitude", "--sparsity", "0.5", "--physical", *common],
        "export": ["export", "--method", "magnitude", "--sparsity", "0.5", "--no-onnx",
                   "--out", str(tmp_path / "pruned"), *common],
        "curve": ["curve", "--methods", "magnitude,random", "--sparsities", "0,0.5", *common],
        "train": ["train", "--method", "admm", *common,
                  *sum((["--param", f"{k}={v}"] for k, v in ADMM_SHORT.items()), [])],
        "analyze": ["analyze", "--methods", "magnitude", *common],
        "precompute": ["precompute", "--methods", "magnitude", "--skip-training",
                       "--out", str(tmp_path / "shipped"), *common],
        "sweep": ["sweep", str(spec), "--store", str(tmp_path / "swept"), "--quiet"],
    }
    outputs = {}
    for kind, args in runs.items():
        out = tmp_path / f"{kind}.json"
        assert main([*args, "--json", str(out)]) == 0, kind
        outputs[kind] = json.loads(out.read_text())
    # finetune and bench cost minutes: their real outputs are the shipped checkpoint's manifest
    # (what `prunelens finetune` writes and prints) and the default's benchmark in docs/
    outputs["finetune"] = stamp("finetune", json.loads(
        (ROOT / "analysis" / "default_checkpoint" / "manifest.json").read_text()))
    outputs["bench"] = stamp("bench", json.loads((ROOT / "docs" / "bench_default.json").read_text()))
    assert set(outputs) == set(KINDS)
    for kind, payload in outputs.items():
        assert payload["schema"] == KINDS[kind].schema and payload["version"] == __version__
        assert problems(payload) == [], kind


def test_an_output_with_non_finite_numbers_still_matches(tmp_path, tiny_bert_dir, store):
    one = tmp_path / "one.csv"  # one example: its standard errors are not finite
    one.write_text("text,label\ngood movie,1\n")
    out = tmp_path / "p.json"
    assert main(["prune", "--method", "magnitude", "--sparsity", "0.25", "--model", str(tiny_bert_dir),
                 "--data", str(one), "--quiet", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["delta"]["accuracy_se"] is None and any("null" in n for n in payload["notes"])
    assert problems(payload) == []
