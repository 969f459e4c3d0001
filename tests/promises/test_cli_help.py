"""What `prunelens ... --help` promises: every subcommand has a description, examples and the
exit codes; ``--method`` lists the registry's methods (``train``: every training mode); and the
exit codes it lists are the ones the commands return (3: partial, results kept)."""

from __future__ import annotations

import json

import pytest

from prunelens.analysis.cli import build_parser, main
from prunelens.analysis.methods import all_methods
from prunelens.analysis.sweep import worker as sweep_worker

SUBCOMMANDS = next(a for a in build_parser()._actions if a.dest == "command").choices


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_subcommand_has_a_description_examples_and_exit_codes(name):
    parser = SUBCOMMANDS[name]
    text = parser.format_help()
    assert parser.description and len(parser.description) > 40
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples and all(line.strip().startswith(f"prunelens {name}") for line in examples)
    assert "exit codes:" in text and "  3  partial" in text and "  2  a bad argument" in text
    method = [a for a in parser._actions if a.dest == "method"]
    if method:
        listed = text.split("--method", 2)[-1]
        wanted = [n for n, m in all_methods().items() if name != "train" or m.trainer is not None]
        assert all(n in listed for n in wanted), (name, wanted)
        assert set(method[0].choices) == set(wanted)


def test_train_help_lists_every_training_mode_and_nothing_else():
    text = " ".join(SUBCOMMANDS["train"].format_help().split())
    modes = [n for n, m in all_methods().items() if m.trainer is not None]
    assert f"training mode: {', '.join(modes)}" in text
    assert "magnitude" not in text


def test_version_and_top_level_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("prunelens 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "exit codes:" in capsys.readouterr().out


def test_an_analysis_with_failed_tasks_exits_3_and_keeps_its_results(tmp_path, tiny_bert_dir, tiny_csv,
                                                                    monkeypatch, capsys):
    real = sweep_worker.run_task

    def flaky(task, *args, **kwargs):  # every random task fails; the rest are computed
        if task.method == "random":
            raise RuntimeError("no")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(sweep_worker, "run_task", flaky)
    out = tmp_path / "a.json"
    code = main(["analyze", "--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet",
                 "--methods", "magnitude,random", "--store", str(tmp_path / "store"), "--json", str(out)])
    assert code == 3
    assert "task(s) failed twice" in capsys.readouterr().err
    summary = json.loads(out.read_text())
    assert summary["counts"]["failed"] >= 1 and summary["counts"]["done"] >= 1
    assert list((tmp_path / "store").rglob("*.json"))  # what was computed is stored
