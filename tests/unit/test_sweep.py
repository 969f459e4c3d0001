"""``prunelens sweep``: spec checks, the exact expansion into store keys, the local, pool and Ray
executors filling the same entries bit for bit, retries, Ctrl-C, and a second run doing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prunelens.analysis.cache import Key, RecordingStore, ResultStore
from prunelens.analysis.cli import main
from prunelens.analysis.errors import ParamError
from prunelens.analysis.sweep import load_spec, parse_spec, plan_sweep, run_sweep
from prunelens.analysis.sweep import worker as sweep_worker
from prunelens.analysis.methods import get_method
from prunelens.analysis.training import get_trainer

ROOT = Path(__file__).resolve().parents[2]
SPARSITIES = [0.0, 0.25, 0.5]
ADMM_SHORT = {"iterations": 1, "steps": 2, "finetune_steps": 2, "batch_size": 4}


def spec_dict(model: Path, data: Path, extra: dict | None = None, **more) -> dict:
    spec = {"models": [str(model)], "data": [str(data)], "units": ["head"],
            "scopes": ["global", "layer"], "sparsities": SPARSITIES,
            "methods": {"magnitude": {}, "random": {"params": {"seed": [0, 1]}},
                        "michel": {"units": ["head", "ffn"], "sparsities": [0.5]}},
            "train": [{"method": "admm", "params": ADMM_SHORT}]}
    spec.update(extra or {}, **more)
    return spec


def write_spec(path: Path, model: Path, data: Path, body: str = "") -> Path:
    path.write_text(f'models = ["{model}"]\ndata = ["{data}"]\n' + (body or (
        'units = ["head"]\nscopes = ["global", "layer"]\nsparsities = [0.0, 0.25, 0.5]\n'
        '[methods.magnitude]\n[methods.random]\nparams = { seed = [0, 1] }\n'
        '[methods.michel]\nunits = ["head", "ffn"]\nsparsities = [0.5]\n'
        '[[train]]\nmethod = "admm"\n'
        'params = { iterations = 1, steps = 2, finetune_steps = 2, batch_size = 4 }\n')))
    return path


def numbers(store_dir: Path) -> dict[str, str]:
    """Every entry's result without its timings, as canonical text, by file name."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    out = {}
    for path in sorted(store_dir.glob("*/*.json")):
        entry = json.loads(path.read_text())
        out[path.name] = json.dumps(strip(entry["result"]), sort_keys=True)
    return out


def expected_mask_bits(scores: np.ndarray, sparsity: float, scope: str) -> str:
    """The keep-mask written out by hand: the lowest round(s * n) scores go (ties: earlier first)."""
    mask = np.ones(scores.shape, dtype=int)
    rows = [scores] if scope == "global" or scores.ndim == 1 else list(scores)
    if scope == "global" or scores.ndim == 1:
        flat = scores.ravel()
        order = sorted(range(flat.size), key=lambda i: (flat[i], i))
        for i in order[:int(round(sparsity * flat.size))]:
            mask.flat[i] = 0
    else:
        for layer, row in enumerate(rows):
            order = sorted(range(row.size), key=lambda i: (row[i], i))
            for i in order[:int(round(sparsity * row.size))]:
                mask[layer, i] = 0
    return "".join(str(v) for v in mask.ravel())


# ---------------------------------------------------------------------------------------------
# the spec


@pytest.mark.parametrize("change, message", [
    ({"methods": {"nosuch": {}}}, "unknown method 'nosuch'"),
    ({"methods": {"random": {"params": {"sede": [1]}}}}, "methods.random: method 'random' has no parameter 'sede'"),
    ({"methods": {"random": {"params": {"seed": [1, -4]}}}}, "parameter 'seed' must be in"),
    ({"methods": {"random": {"params": {"seed": []}}}}, "params.seed is an empty list"),
    ({"methods": {"smp": {"units": ["ffn"]}}}, "method 'smp' scores units head, not 'ffn'"),
    ({"methods": {"smp": {}}, "units": ["ffn"]}, "method 'smp' scores none of the units ffn"),
    ({"methods": {"random": {"scopes": ["local"]}}}, "scope 'local' is not one of global, layer"),
    ({"sparsities": [0.5, 1.5]}, "methods.magnitude: sparsity must be in [0, 1), got 1.5"),
    ({"sparsities": ["half"]}, "sparsities must be numbers in [0, 1), got 'half'"),
    ({"limit": 0}, "limit must be a positive integer"),
    ({"modles": ["default"]}, "unknown key(s) modles"),
    ({"methods": {"random": {"param": {}}}}, "methods.random: unknown key(s) param"),
    ({"train": [{"method": "magnitude"}]}, "method 'magnitude' has no training mode"),
    ({"train": [{"method": "admm", "params": {"steps": 0}}]}, "train[0] (admm): parameter 'steps' must be in"),
    ({"data": ["./missing.csv"]}, "data './missing.csv' not found"),
    ({"methods": {}, "train": []}, "names no methods and no training runs"),
])
def test_spec_errors_are_one_clear_line(change, message, tiny_bert_dir, tiny_csv):
    with pytest.raises(ParamError) as info:
        parse_spec(spec_dict(tiny_bert_dir, tiny_csv, change), base=Path("/nonexistent"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_grid_is_the_product_of_its_lists(tiny_bert_dir, tiny_csv):
    spec = parse_spec(spec_dict(tiny_bert_dir, tiny_csv, methods={
        "pins": {"params": {"batches": [1, 2], "eta": [0.0, 1e-4, 1e-3], "normalize": False}}}))
    (grid,) = spec.methods
    assert [(p["batches"], p["eta"]) for p in grid.params] == [
        (1, 0.0), (1, 1e-4), (1, 1e-3), (2, 0.0), (2, 1e-4), (2, 1e-3)]
    assert all(p["normalize"] is False and p["beta1"] == 0.85 for p in grid.params)  # defaults filled
    assert grid.units == ("head",) and grid.scopes == ("global", "layer")


def test_relative_paths_are_read_from_the_spec_folder(tmp_path, tiny_bert_dir, tiny_csv):
    (tmp_path / "data.csv").write_text(Path(tiny_csv).read_text())
    spec = load_spec(write_spec(tmp_path / "s.toml", tiny_bert_dir, Path("data.csv")))
    assert spec.targets[0].data == str((tmp_path / "data.csv").resolve())
    assert spec.targets[0].model == str(Path(tiny_bert_dir).resolve())


def test_invalid_toml_and_missing_spec(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [default]\n")
    with pytest.raises(ParamError, match="is not valid TOML"):
        load_spec(bad)
    with pytest.raises(ParamError, match="sweep spec not found"):
        load_spec(tmp_path / "none.toml")


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--address", "auto"], "--address names a Ray cluster"),
    (["--gpus-per-task", "0"], "--gpus-per-task must be positive"),
    (["--device", "banana"], "--device must be cpu, cuda, cuda:N or auto, got 'banana'"),
    pytest.param(["--device", "cuda"], "this machine's torch sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_cli_refuses_bad_options_before_loading(args, message, tmp_path, tiny_bert_dir, tiny_csv, capsys):
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv)
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "planning" not in err and err.count("\n") == 1
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------------------------
# expansion into keys


def test_spec_expands_into_exactly_these_keys(tiny_session, tiny_bert_dir, tiny_csv):
    MICHEL = get_method("michel").validate({"normalize": True})  # defaults filled in, as keys hold them
    spec = parse_spec(spec_dict(tiny_bert_dir, tiny_csv))
    plan = plan_sweep(spec, tiny_session.store)
    model, data = tiny_session.loaded.fingerprint, tiny_session.data.fingerprint
    admm_params = {**{p.name: p.default for p in get_trainer("admm").params}, **ADMM_SHORT}
    expected = {
        Key.make(model, data, "train-run", "admm", "", admm_params).digest,
        Key.make(model, data, "scores", "magnitude", "head", {}).digest,
        Key.make(model, data, "scores", "random", "head", {"seed": 0}).digest,
        Key.make(model, data, "scores", "random", "head", {"seed": 1}).digest,
        Key.make(model, data, "scores", "michel", "head", MICHEL).digest,
        Key.make(model, data, "scores", "michel", "ffn", MICHEL).digest,
    }
    assert set(plan.records) == expected  # mask evaluations wait for their scores
    assert all(r.status == "todo" for r in plan.records.values())
    assert plan.waiting == 2 * 3 + 2 * (2 * 3) + 2 * (2 * 1)  # scopes x sparsities per scored method

    report = run_sweep(spec, tiny_session.store, progress=False)
    assert report.count("failed") == 0
    masks = set()
    for method, unit, params, scopes, sparsities in [
            ("magnitude", "head", {}, ("global", "layer"), SPARSITIES),
            ("random", "head", {"seed": 0}, ("global", "layer"), SPARSITIES),
            ("random", "head", {"seed": 1}, ("global", "layer"), SPARSITIES),
            ("michel", "head", MICHEL, ("global", "layer"), [0.5]),
            ("michel", "ffn", MICHEL, ("global", "layer"), [0.5])]:
        stored = tiny_session.store.get(Key.make(model, data, "scores", method, unit, params))
        scores = np.asarray(stored["scores"])
        for scope in scopes:
            for sparsity in sparsities:
                bits = expected_mask_bits(scores, sparsity, scope)
                masks.add(Key.make(model, data, "mask-eval", "", unit,
                                   {"mask": bits, "shape": list(scores.shape)}).digest)
    replanned = plan_sweep(spec, tiny_session.store)
    assert set(replanned.records) == expected | masks
    assert all(r.status == "stored" for r in replanned.records.values())
    stored_files = {p.stem for p in Path(tiny_session.store.user_dir).glob("*/*.json")}
    # michel is joint: its one backward pass also gave (and stored) the units the spec did not ask for
    joint = {Key.make(model, data, "scores", "michel", unit, MICHEL).digest for unit in ("attention", "neuron")}
    assert stored_files == expected | masks | joint  # nothing else was written


def test_dry_run_computes_nothing(tiny_session, tiny_bert_dir, tiny_csv):
    spec = parse_spec(spec_dict(tiny_bert_dir, tiny_csv))
    report = run_sweep(spec, tiny_session.store, progress=False, dry_run=True)
    assert report.count("todo") == 6 and "dry run: 6 of 6 entries" in report.notes[0]
    assert not list(Path(tiny_session.store.user_dir).glob("*/*.json"))


# ---------------------------------------------------------------------------------------------
# running


def test_local_sweep_then_a_second_run_does_nothing_and_says_so(tmp_path, tiny_bert_dir, tiny_csv, capsys):
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv)
    store = tmp_path / "store"
    assert main(["sweep", str(spec), "--store", str(store), "--json", str(tmp_path / "one.json")]) == 0
    first = json.loads((tmp_path / "one.json").read_text())
    out = capsys.readouterr()
    assert first["counts"]["done"] == len(first["tasks"]) > 6 and first["counts"]["failed"] == 0
    assert "sweep: 100%" in out.err and "done " in out.err and "failed 0" in out.err
    assert "mask-eval" in out.out and f"{first['counts']['done']} computed, 0 already stored" in out.out
    entries = numbers(store)
    tasks = len(first["tasks"])
    assert len(entries) == tasks + 2  # + michel's attention and neuron scores (its pass is joint)

    assert main(["sweep", str(spec), "--store", str(store), "--json", str(tmp_path / "two.json")]) == 0
    second = json.loads((tmp_path / "two.json").read_text())
    out = capsys.readouterr()
    assert f"nothing to do: all {tasks} entries of the sweep are already in the store" in out.err
    assert second["counts"] == {"stored": tasks, "done": 0, "failed": 0, "blocked": 0}
    assert "sweep:" not in out.err  # no bar: no task ran
    assert numbers(store) == entries


def test_sweep_fills_what_the_cli_reads(tmp_path, tiny_bert_dir, tiny_csv, monkeypatch, capsys):
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv)
    store = tmp_path / "store"
    assert main(["sweep", str(spec), "--store", str(store), "--quiet"]) == 0
    swept = numbers(store)
    monkeypatch.setenv("PRUNELENS_CACHE", str(store))
    common = ["--model", str(tiny_bert_dir), "--data", str(tiny_csv), "--quiet"]
    assert main(["curve", *common, "--methods", "magnitude,random", "--sparsities", "0,0.25,0.5",
                 "--scope", "layer", "--json", str(tmp_path / "c.json")]) == 0
    assert main(["train", *common, "--method", "admm", "--json", str(tmp_path / "t.json"),
                 *sum((["--param", f"{k}={v}"] for k, v in ADMM_SHORT.items()), [])]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["cached"] is True
    assert len(json.loads((tmp_path / "c.json").read_text())["rows"]) == 6
    assert numbers(store) == swept  # the curve and the run were all answered from the sweep's entries


def test_a_failure_is_retried_once_then_reported(tiny_session, tiny_bert_dir, tiny_csv, monkeypatch, capsys):
    real = sweep_worker.run_task
    calls: dict[str, int] = {}

    def flaky(task, *args, **kwargs):
        calls[task.label] = calls.get(task.label, 0) + 1
        if task.label == "magnitude head" and calls[task.label] == 1:
            raise RuntimeError("worker lost")
        if task.label == "random head (seed=1)":
            raise ParamError("seed 1 is cursed")
        return real(task, *args, **kwargs)

    monkeypatch.setattr(sweep_worker, "run_task", flaky)
    spec = parse_spec(spec_dict(tiny_bert_dir, tiny_csv, train=[]))
    report = run_sweep(spec, tiny_session.store)
    err = capsys.readouterr().err
    rows = {r.task.label: r for r in report.records}
    assert rows["magnitude head"].status == "done" and rows["magnitude head"].attempts == 2
    assert "retrying magnitude head: RuntimeError: worker lost" in err
    failed = rows["random head (seed=1)"]
    assert failed.status == "failed" and failed.attempts == 2 and failed.error == "seed 1 is cursed"
    assert "failed: random head (seed=1)" in err
    assert report.blocked == 6  # its 2 scopes x 3 sparsities were never planned
    assert report.count("failed") == 1 and report.count("done") > 5


def test_cli_exits_3_when_tasks_failed(tmp_path, tiny_bert_dir, tiny_csv, monkeypatch, capsys):
    def broken(task, *args, **kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(sweep_worker, "run_task", broken)
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv, '[methods.magnitude]\n')
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store"), "--quiet"]) == 3  # partial
    err = capsys.readouterr().err
    assert "error: 1 of 1 tasks failed twice" in err and "rerun the same command" in err


def test_recording_store_writes_nothing(tmp_path):
    store = RecordingStore(tmp_path / "s", shipped_dir=None)
    key = Key.make("m", "d", "scores", "x", "head", {})
    assert store.put(key, {"scores": [1.0]})
    assert store.get(key) == {"scores": [1.0]} and store.writes == [(key, {"scores": [1.0]})]
    assert not (tmp_path / "s").exists()
    with pytest.raises(TypeError):
        store.put(key, {"scores": object()})


@pytest.mark.slow
def test_a_dead_pool_worker_fails_its_tasks_and_the_retry_runs_on_a_fresh_pool(
        tmp_path, tiny_bert_dir, tiny_csv, monkeypatch, capsys):
    from prunelens.analysis.sweep import executors

    real_submit = executors.PoolExecutor.submit
    killed = []

    def submit(self, task):
        if not killed:  # the first task's process dies as if killed for memory
            killed.append(task.label)
            return self._pool.submit(os._exit, 9)
        return real_submit(self, task)

    monkeypatch.setattr(executors.PoolExecutor, "submit", submit)
    spec = load_spec(write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv, '[methods.magnitude]\n'
                                '[methods.random]\nparams = { seed = [0, 1, 2] }\n'))
    report = run_sweep(spec, ResultStore(tmp_path / "store", shipped_dir=None), workers=2)
    err = capsys.readouterr().err
    assert f"retrying {killed[0]}: BrokenProcessPool" in err
    assert report.count("failed") == 0 and report.count("done") == 4
    assert {r.task.label: r.attempts for r in report.records}[killed[0]] == 2


@pytest.mark.slow
def test_pool_and_ray_fill_the_same_entries_bit_for_bit(tmp_path, tiny_bert_dir, tiny_csv):
    ray = pytest.importorskip("ray")
    from prunelens.analysis.sweep.executors import worker_env

    spec = load_spec(write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv))
    local = ResultStore(tmp_path / "local", shipped_dir=None)
    run_sweep(spec, local, progress=False)
    expected = numbers(tmp_path / "local")
    assert len(expected) > 6

    pool = ResultStore(tmp_path / "pool", shipped_dir=None)
    report = run_sweep(spec, pool, workers=2, progress=False)
    assert report.workers == 2 and numbers(tmp_path / "pool") == expected
    workers = {r.worker for r in report.records}
    assert len(workers) == 2  # both processes took tasks
    assert sum(r.opened for r in report.records) == 2  # and each loaded the model once

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": worker_env()})
    try:
        on_ray = ResultStore(tmp_path / "ray", shipped_dir=None)
        report = run_sweep(spec, on_ray, executor="ray", progress=False)
        assert report.executor == "ray" and report.workers == 2 and report.count("failed") == 0
        assert numbers(tmp_path / "ray") == expected
        workers = {r.worker for r in report.records if r.status == "done"}
        assert all(w.split(":")[1] != str(os.getpid()) for w in workers)  # computed in Ray workers
        assert sum(r.opened for r in report.records) == len(workers)  # one model load per worker
        again = run_sweep(spec, on_ray, executor="ray", progress=False)
        assert again.count("done") == 0 and again.notes[0].startswith("nothing to do")
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_entries_and_a_rerun_continues(tmp_path, tiny_bert_dir, tiny_csv):
    spec = write_spec(tmp_path / "s.toml", tiny_bert_dir, tiny_csv,
                      'sparsities = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75]\nscopes = ["global", "layer"]\n'
                      '[methods.random]\nparams = { seed = ' + str(list(range(40))) + ' }\n'
                      '[methods.ablation]\n')
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "prunelens.analysis.cli", "sweep", str(spec), "--store", str(store),
           "--json", str(tmp_path / "s.json")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while len(list(store.glob("*/*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again to continue" in err
    kept = numbers(store)  # every file parses: nothing half-written
    assert 3 <= len(kept) and not list(store.glob("*/*.tmp"))

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    total = len(summary["tasks"])
    assert summary["counts"]["stored"] == len(kept) and summary["counts"]["done"] == total - len(kept)
    assert {k: v for k, v in numbers(store).items() if k in kept} == kept
