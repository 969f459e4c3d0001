"""What the CLI prints and where it writes (issue 30 items 8 and 10): ``train`` prints a summary
(the whole result only with ``--json``); ``finetune`` never writes into the shipped checkpoint
unless asked, and then says what that invalidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunelens.analysis.cli import main
from prunelens.analysis.cli_args import FINETUNE_OUT


def test_train_prints_a_summary_and_the_json_only_when_asked(tiny_bert_dir, tiny_csv, store, tmp_path, capsys):
    common = ["--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet"]
    assert main(["train", "--method", "snip", "--param", "steps=2", *common]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) <= 8 and "snip training run" in lines[0] and "steps=2" in lines[0]
    assert [ln.split()[0] for ln in lines[2:5]] == ["untrained", "trained", "λ"]
    assert "correct" not in out and "--json FILE" in lines[-1]
    assert main(["train", "--method", "snip", "--param", "steps=2", *common,
                 "--json", str(tmp_path / "run.json")]) == 0
    assert capsys.readouterr().out == ""
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["cached"] is True and set(run["variants"]) == {"untrained", "trained", "control"}


def test_finetune_writes_elsewhere_unless_told_to_overwrite_the_shipped_checkpoint(tmp_path, monkeypatch, capsys):
    import prunelens.analysis.finetune as finetune_mod
    from prunelens.analysis.models import CHECKPOINT_DIR

    written = []
    monkeypatch.setattr(finetune_mod, "finetune", lambda recipe, out_dir: written.append(out_dir) or {})
    monkeypatch.chdir(tmp_path)
    assert main(["finetune"]) == 0
    assert written == [Path(FINETUNE_OUT)]
    assert main(["finetune", "--out", str(CHECKPOINT_DIR)]) == 2  # refused before anything runs
    err = capsys.readouterr().err
    assert "is the shipped checkpoint (add --overwrite-shipped" in err and len(written) == 1
    assert main(["finetune", "--overwrite-shipped"]) == 0
    assert written[-1] == CHECKPOINT_DIR
    err = capsys.readouterr().err
    assert "shipped results" in err and "prunelens precompute" in err


@pytest.mark.parametrize("argv", [["finetune", "--overwrite-shipped", "--out", "x"]])
def test_finetune_refuses_both_targets(argv, capsys):
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err


def test_a_store_hit_draws_no_progress_bar(tiny_bert_dir, tiny_csv, store, capsys):
    # issue 30 item 11: a stray empty tqdm bar on stderr for answers from the store
    common = ["--model", str(tiny_bert_dir), "--data", str(tiny_csv)]
    assert main(["score", "--method", "michel", *common]) == 0
    assert "|" in capsys.readouterr().err  # computed: a bar was drawn
    assert main(["score", "--method", "michel", *common]) == 0
    captured = capsys.readouterr()
    assert "from the store" in captured.out and "|" not in captured.err


def test_messages_read_right():
    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.models import check_family
    from prunelens.dashboard.data_roots import confine

    with pytest.raises(ModelError, match="is an 'opt' model"):
        check_family("opt", "m")
    with pytest.raises(ModelError, match="is a 'gpt2' model"):
        check_family("gpt2", "m")
    with pytest.raises(ModelError, match="move the folder there"):
        confine("/", "model folder", ModelError)
    with pytest.raises(Exception, match="move the file there"):
        confine("/", "data file")
