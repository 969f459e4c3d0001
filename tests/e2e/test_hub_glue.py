"""The hub-id and GLUE paths end to end on on-disk copies (issue 14, item 5): a model folder laid
out as a hub snapshot (``models--org--name/snapshots/<rev>``, ``refs/main``) loaded by its hub id
with the hub offline, and a ``datasets`` ``save_to_disk`` GLUE task with sentence pairs (MRPC);
every dashboard page and ``prunelens analyze`` work on them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import DASHBOARD_APP
from tests.tiny import tiny_frame, write_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
HUB_ID = "prunelens-tests/tiny-bert-mrpc"
PAGES = ("model_data", "importance", "prune", "compare", "spectral", "attention", "training")


@pytest.fixture(scope="module")
def offline_copies(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("hub_glue")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    write_tiny_bert(repo / "snapshots" / revision, seed=3)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    splits = {}
    for split, n, seed in (("train", 160, 1), ("validation", 120, 2)):
        frame = tiny_frame(n, seed=seed, pairs=True).rename(columns={"text": "sentence1",
                                                                     "text_pair": "sentence2"})
        frame["idx"] = range(n)
        splits[split] = datasets.Dataset.from_pandas(frame)
    datasets.DatasetDict(splits).save_to_disk(str(root / "glue" / "mrpc"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def offline_env(offline_copies, monkeypatch, tmp_path):
    env = {"HF_HUB_CACHE": str(offline_copies / "hub"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PRUNELENS_GLUE_DIR": str(offline_copies / "glue"),
           "PRUNELENS_CACHE": str(tmp_path / "store")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # libraries imported already read their module-level copies, not the environment
    import datasets.config as datasets_config
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_OFFLINE", True)
    return env


def test_hub_id_and_glue_pairs_load_as_the_hub_and_datasets_would(offline_env):
    from prunelens.analysis.operations import open_session

    session = open_session(HUB_ID, "glue:mrpc")
    assert session.loaded.source == "hub" and session.loaded.inventory.layers == 2
    assert session.data.metric == "f1" and len(session.data) == 120
    assert session.data.text_pairs is not None and len(session.data.text_pairs) == 120
    batch = session.evaluator.batches[0]
    assert (batch.model_inputs()["token_type_ids"] == 1).any()  # the second sentence is segment 1
    train = open_session(HUB_ID, "glue:mrpc", split="train")
    assert len(train.data) == 160


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_a_hub_id_and_a_glue_pair_task(offline_env, page):
    at = AppTest.from_file(DASHBOARD_APP, default_timeout=180)
    at.query_params.update({"model": HUB_ID, "data": "glue:mrpc", "method": "magnitude"})
    at.session_state["prunelens.page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any(HUB_ID in m.value for m in at.markdown) or page != "model_data"


def test_analyze_fills_the_store_for_a_hub_id_on_glue(offline_env, tmp_path):
    import json
    import os

    out = tmp_path / "a.json"
    done = subprocess.run([sys.executable, "-m", "prunelens.analysis.cli", "analyze", "--model", HUB_ID,
                           "--data", "glue:mrpc", "--methods", "magnitude,michel", "--json", str(out)],
                          cwd=ROOT, env={**os.environ, **offline_env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["counts"]["failed"] == 0 and summary["counts"]["stored"] == 0
    assert summary["counts"]["done"] > 20  # scores of 4 units x 2 methods and their distinct masks
