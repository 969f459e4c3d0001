"""Every bad argument is refused before the model and data load (one ``error:`` line, exit 2),
NaN/inf thresholds are refused, and the dashboard is offline unless ``--online`` (issue 15)."""

from __future__ import annotations

import os

import pytest

from analysis.cli import main


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail the test if anything tries to open a model or data set."""
    import analysis.operations

    def refuse(*args, **kwargs):
        raise AssertionError("the model and data were loaded before the arguments were checked")

    monkeypatch.setattr(analysis.operations, "open_session", refuse)


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

    from analysis.errors import ParamError
    from analysis.pruning import select

    with pytest.raises(ParamError, match="finite"):
        select(np.ones((2, 4)), threshold=float("nan"))


@pytest.fixture()
def launched(monkeypatch):
    """Capture what `prunelens dashboard` would exec, and the environment it would pass."""
    import analysis.cli

    seen = {}

    def fake_launch(cmd, env=None):
        seen["cmd"], seen["env"] = cmd, env
        return 0

    monkeypatch.setattr(analysis.cli, "_launch", fake_launch)
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
