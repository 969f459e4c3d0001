"""Every bad argument is refused before the model and data load (one ``error:`` line, exit 2),
NaN/inf thresholds are refused, and the dashboard is offline unless ``--online`` (issue 15)."""

from __future__ import annotations

import os

import pytest

from prunelens.analysis.cli import main


@pytest.mark.parametrize("argv, message", [
    (["prune", "--method", "magnitude", "--sparsity", "1.5"], "sparsity must be in [0, 1), got 1.5"),
    (["prune", "--method", "magnitude", "--threshold", "nan"], "threshold must be a finite number >= 0"),
    (["prune", "--method", "magnitude", "--threshold", "inf"], "threshold must be a finite number >= 0"),
    (["prune", "--method", "magnitude", "--threshold", "-1"], "threshold must be a finite number >= 0"),
    (["prune", "--method", "magnitude"], "give --sparsity or --threshold"),
    (["prune", "--method", "magnitude", "--sparsity", "0.5", "--threshold", "1"],
     "either a sparsity or a threshold, not both"),
    (["prune", "--method", "nosuch", "--sparsity", "0.5"], "unknown method 'nosuch'"),
    (["prune", "--method", "smp", "--unit", "ffn", "--sparsity", "0.5"], "scores units head, not 'ffn'"),
    (["score", "--method", "random", "--param", "seed=-1"], "parameter 'seed' must be in"),
    (["score", "--method", "random", "--param", "sede=1"], "has no parameter 'sede'"),
    (["curve", "--methods", "magnitude,nosuch"], "unknown method 'nosuch'"),
    (["curve", "--methods", "magnitude", "--sparsities", "0,2"], "sparsity must be in [0, 1), got 2.0"),
    (["curve", "--methods", "smp", "--unit", "ffn"], "scores units head, not 'ffn'"),
    (["train", "--method", "magnitude"], "has no training mode"),
    (["train", "--method", "admm", "--param", "steps=0"], "parameter 'steps' must be in"),
])
def test_bad_arguments_are_refused_before_loading(argv, message, no_loading, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert "loading model" not in err


def test_a_nan_threshold_never_prunes_everything():
    import numpy as np

    from prunelens.analysis.errors import ParamError
    from prunelens.analysis.pruning import select

    with pytest.raises(ParamError, match="finite"):
        select(np.ones((2, 4)), threshold=float("nan"))


@pytest.fixture()
def launched(monkeypatch):
    """Capture what `prunelens dashboard` would exec, and the environment it would pass."""
    import prunelens.analysis.cli

    seen = {}

    def fake_launch(cmd, env=None):
        seen["cmd"], seen["env"] = cmd, env
        return 0

    monkeypatch.setattr(prunelens.analysis.cli, "_launch", fake_launch)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # as a user's shell has them
        monkeypatch.delenv(name, raising=False)
    return seen


def test_the_dashboard_is_offline_unless_asked(launched, capsys):
    assert main(["dashboard", "--port", "8599"]) == 0
    assert launched["env"]["HF_HUB_OFFLINE"] == "1" and launched["env"]["HF_DATASETS_OFFLINE"] == "1"
    assert "offline: hub ids and GLUE from the local cache; --online to download" in capsys.readouterr().err
    assert main(["dashboard", "--port", "8599", "--online"]) == 0
    assert launched["env"]["HF_HUB_OFFLINE"] == "0"
    assert "HF_HUB_OFFLINE" not in os.environ  # this process is left as it was


@pytest.mark.parametrize("argv, message", [
    (["dashboard", "--host", ""], "--host needs an address"),
    (["dashboard", "--host", "  "], "--host needs an address"),
    (["dashboard", "--port", "0"], "--port must be in 1..65535"),
    (["dashboard", "--port", "70000"], "--port must be in 1..65535"),
])
def test_the_dashboard_refuses_an_empty_host_or_bad_port(argv, message, launched, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert "cmd" not in launched  # nothing was started


def _named_model(folder, id2label):
    import json

    from tests.tiny import write_tiny_bert

    model = write_tiny_bert(folder)
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in id2label.items()}
    config["label2id"] = {name: i for i, name in id2label.items()}
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_text_labels_follow_the_models_own_label_names(tmp_path, store):
    """`positive` sorts after `negative`; a model whose label 0 is `positive` must see the
    positive sentences as 0 (sorted order gave 1 - accuracy)."""
    from prunelens.analysis.operations import open_session
    from tests.tiny import tiny_frame

    frame = tiny_frame(40)
    as_names = frame.assign(label=frame["label"].map({1: "positive", 0: "negative"}))
    as_names.to_csv(tmp_path / "names.csv", index=False)
    model = _named_model(tmp_path / "m", {0: "Positive", 1: "Negative"})
    session = open_session(str(model), str(tmp_path / "names.csv"), store=store)
    expected = frame["label"].map({1: 0, 0: 1}).to_numpy()
    assert session.data.labels.tolist() == expected.tolist()
    assert any("mapped by the model's own label names" in n for n in session.data.notes)
    ids = frame.assign(label=expected)
    ids.to_csv(tmp_path / "ids.csv", index=False)
    by_id = open_session(str(model), str(tmp_path / "ids.csv"), store=store)
    assert session.evaluator.base.accuracy == by_id.evaluator.base.accuracy
    generic = open_session(str(_named_model(tmp_path / "g", {0: "LABEL_0", 1: "LABEL_1"})),
                           str(tmp_path / "names.csv"), store=store)
    assert generic.data.labels.tolist() == frame["label"].tolist()  # sorted: negative=0
    assert any("sorted order" in n for n in generic.data.notes)
