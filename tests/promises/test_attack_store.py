"""Issue 15, "the store serves another computation's results": attacks on the store's keys and
entries. Each case names what the code before did (reasoned from that code: the model key was
the weights alone, the data key joined texts with \\x1f/\\x1e, any entry with the right digest was
served as it was)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from prunelens.analysis.cache import (MAX_ENTRY_BYTES, SHIPPED_DIR, Key, ResultStore, StoreWarning, canonical,
                            load_manifest, write_manifest)
from prunelens.analysis.data import TextData
from prunelens.analysis.models import load_model
from prunelens.analysis.operations import compute_scores, evaluate_mask, open_session

# ---------------------------------------------------------------------------------------------
# the model key covers the configuration and the tokenizer, not only the weights


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


CONFIG_EDITS = {  # the same weights, a different computation; old key: identical to the original
    "hidden_act": {"hidden_act": "relu"},
    "layer_norm_eps": {"layer_norm_eps": 1e-3},
    "dropout": {"hidden_dropout_prob": 0.3},  # training runs differ
    "label_names": {"id2label": {"0": "positive", "1": "negative"},
                    "label2id": {"positive": 0, "negative": 1}},  # text labels map the other way
    "problem_type": {"problem_type": "multi_label_classification"},
}
TOKENIZER_EDITS = {  # the same weights and config, other token ids; old key: identical
    "casing": ("tokenizer_config.json", {"do_lower_case": False}),
    "max_length": ("tokenizer_config.json", {"model_max_length": 8}),
}


@pytest.fixture()
def model_copy(tiny_bert_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, folder)
    return folder


@pytest.mark.parametrize("edit", list(CONFIG_EDITS), ids=list(CONFIG_EDITS))
def test_a_config_change_changes_the_model_key(edit, model_copy, tiny_loaded):
    _edit_json(model_copy / "config.json", **CONFIG_EDITS[edit])
    assert load_model(str(model_copy)).fingerprint != tiny_loaded.fingerprint


@pytest.mark.parametrize("edit", list(TOKENIZER_EDITS), ids=list(TOKENIZER_EDITS))
def test_a_tokenizer_change_changes_the_model_key(edit, model_copy, tiny_loaded):
    name, changes = TOKENIZER_EDITS[edit]
    if name == "tokenizer_config.json" and (model_copy / "tokenizer.json").exists():
        (model_copy / "tokenizer.json").unlink()  # rebuilt from vocab.txt with the new settings
    _edit_json(model_copy / name, **changes)
    assert load_model(str(model_copy)).fingerprint != tiny_loaded.fingerprint


def test_a_different_vocabulary_changes_the_model_key(model_copy, tiny_loaded):
    for name in ("tokenizer.json",):
        if (model_copy / name).exists():
            (model_copy / name).unlink()
    vocab = (model_copy / "vocab.txt").read_text().splitlines()
    vocab[5], vocab[6] = vocab[6], vocab[5]  # "good" and "bad" swap ids; old key: identical
    (model_copy / "vocab.txt").write_text("\n".join(vocab) + "\n")
    assert load_model(str(model_copy)).fingerprint != tiny_loaded.fingerprint


def test_the_same_model_elsewhere_keeps_its_key(model_copy, tiny_loaded):
    """Not over-sensitive: a copy in another folder (another name_or_path) is the same model,
    so it keeps its stored results."""
    assert load_model(str(model_copy)).fingerprint == tiny_loaded.fingerprint


def test_the_default_key_is_the_shipped_one(default_loaded):
    """The shipped store is keyed by the defaults' full fingerprints (weights, config, tokenizer;
    default-embedding's pooling too): the dashboard finds it. Every shipped entry is in the
    manifest and readable without warnings."""
    from prunelens.analysis.models import load_model

    listed = load_manifest(SHIPPED_DIR)
    files = list(SHIPPED_DIR.glob("*/*.json"))
    assert len(files) == len(listed) > 300
    models = {json.loads(p.read_text())["key"]["model"] for p in files}
    assert models == {default_loaded.fingerprint, load_model("default-embedding").fingerprint}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert len(ResultStore(Path("/nonexistent-user-store"), SHIPPED_DIR).entries()) == len(files)


# ---------------------------------------------------------------------------------------------
# the data key: no boundary can be faked, no pair column differs from an empty one


def _data(texts, pairs=None, labels=None) -> TextData:
    labels = np.zeros(len(texts), dtype=np.int64) if labels is None else np.asarray(labels)
    return TextData("d", "dev", list(texts), labels, None if pairs is None else list(pairs))


DATA_COLLISIONS = {  # pairs of data sets the old key could not tell apart
    "no-pair-vs-empty-pair": (_data(["a\x1f"]), _data(["a\x1f"], pairs=[""])),
    "moved-boundary": (_data(["a\x1f\x1eb", "c"]), _data(["a", "b\x1f\x1ec"])),
    "empty-pairs-vs-none": (_data(["x", "y"]), _data(["x", "y"], pairs=["", ""])),
}


@pytest.mark.parametrize("case", list(DATA_COLLISIONS), ids=list(DATA_COLLISIONS))
def test_different_data_never_share_a_key(case):
    a, b = DATA_COLLISIONS[case]
    assert a.fingerprint != b.fingerprint


def test_the_same_data_keeps_its_key():
    assert _data(["a", "b"], labels=[0, 1]).fingerprint == _data(["a", "b"], labels=[0, 1]).fingerprint
    assert _data(["a", "b"], labels=[0, 1]).fingerprint != _data(["a", "b"], labels=[1, 0]).fingerprint


# ---------------------------------------------------------------------------------------------
# planted, edited and malformed entries are recomputed, not served


def _plant(store: ResultStore, key: Key, result, **extra) -> Path:
    """Write an entry by hand, as someone with write access to the folder could."""
    path = store.user_dir / key.digest[:2] / f"{key.digest}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(canonical({"format": 1, "digest": key.digest, "key": key.describe(),
                               "result": result, **extra}))
    return path


def _magnitude_key(session):
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import score_keys

    method = get_method("magnitude")
    return score_keys(session, method, "head", method.validate(None))["fp32"]


def test_a_planted_entry_with_the_right_digest_is_not_served(tiny_session):
    """Old: invented numbers under the right digest were served as magnitude's scores."""
    real = compute_scores(tiny_session, "magnitude", "head", use_store=False).scores
    _plant(tiny_session.store, _magnitude_key(tiny_session), {"scores": [[999.0] * 4] * 2, "seconds": 0})
    with pytest.warns(StoreWarning, match="not written by this store"):
        result = compute_scores(tiny_session, "magnitude", "head")
    assert not result.cached and np.array_equal(result.scores, real)
    assert compute_scores(tiny_session, "magnitude", "head").cached  # the recomputed one is kept


def test_an_edited_entry_is_not_served(tiny_session):
    """Old: a stored entry whose numbers were edited in place was served edited."""
    compute_scores(tiny_session, "magnitude", "head")
    path = next(tiny_session.store.user_dir.glob("*/*.json"))
    entry = json.loads(path.read_text())
    entry["result"]["scores"][0][0] = 1e6
    path.write_text(canonical(entry))
    with pytest.warns(StoreWarning, match="not written by this store"):
        result = compute_scores(tiny_session, "magnitude", "head")
    assert not result.cached and result.scores[0, 0] != 1e6


def test_an_entry_signed_by_another_user_is_not_served(tiny_session, tmp_path, monkeypatch):
    """A store folder written under someone else's secret (copied, downloaded) vouches for nothing."""
    monkeypatch.setenv("PRUNELENS_SECRET_FILE", str(tmp_path / "other-user-key"))
    compute_scores(tiny_session, "magnitude", "head")
    monkeypatch.setenv("PRUNELENS_SECRET_FILE", str(tmp_path / "my-key"))
    with pytest.warns(StoreWarning, match="not written by this store"):
        assert not compute_scores(tiny_session, "magnitude", "head").cached


MALFORMED_SCORES = {  # each one signed (written through the store), still not usable
    "wrong-shape": [[1.0, 2.0, 3.0]],  # old: served; the heatmap then failed on a (1, 3) array
    "strings": [["a", "b", "c", "d"], ["e", "f", "g", "h"]],  # old: ValueError in np.asarray
    "nan": [[float("nan")] * 4] * 2,  # old: NaN scores ranked as if they were numbers
    "ragged": [[1.0, 2.0, 3.0, 4.0], [1.0]],  # old: ValueError in np.asarray
    "booleans": [[True] * 4] * 2,
    "not-a-list": {"0": 1.0},
}


@pytest.mark.parametrize("case", list(MALFORMED_SCORES), ids=list(MALFORMED_SCORES))
def test_malformed_scores_are_recomputed(case, tiny_session):
    real = compute_scores(tiny_session, "magnitude", "head", use_store=False).scores
    tiny_session.store.put(_magnitude_key(tiny_session), {"scores": MALFORMED_SCORES[case], "seconds": 0})
    with pytest.warns(StoreWarning, match="malformed|do not fit this model"):
        result = compute_scores(tiny_session, "magnitude", "head")
    assert not result.cached and np.array_equal(result.scores, real)


def test_a_malformed_mask_evaluation_is_recomputed(tiny_session):
    """Old: an entry without 'pruned' reached the Prune page and raised KeyError there."""
    mask = np.ones((2, 4))
    mask[0, 0] = 0
    from prunelens.analysis.operations import mask_keys

    key = mask_keys(tiny_session, "head", mask)["fp32"]
    tiny_session.store.put(key, {"base": {"accuracy": 1.0, "loss": 0.0, "margin": 1.0}})
    with pytest.warns(StoreWarning, match="malformed"):
        result, cached = evaluate_mask(tiny_session, "head", mask)
    assert not cached and set(result) >= {"base", "pruned", "delta"}


# ---------------------------------------------------------------------------------------------
# entries that are not files, too deep or too big


@pytest.fixture()
def plain_store(tmp_path):
    return ResultStore(tmp_path / "store", shipped_dir=None)


KEY = Key.make("m" * 16, "d" * 16, "example", "x", "head", {"seed": 1})


def _entry_path(store):
    return store.user_dir / KEY.digest[:2] / f"{KEY.digest}.json"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_entry_does_not_hang_the_reader(plain_store):
    """Old: read_bytes() on a FIFO blocked forever (no writer ever comes)."""
    path = _entry_path(plain_store)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    out = {}
    reader = threading.Thread(target=lambda: out.setdefault("hit", plain_store.get(KEY)), daemon=True)
    with pytest.warns(StoreWarning, match="not a regular file"):
        reader.start()
        reader.join(timeout=10)
    assert not reader.is_alive(), "the reader hung on the FIFO"
    assert out == {"hit": None}
    assert plain_store.entries() == []  # listing skips it too, without hanging


def test_a_deeply_nested_entry_is_corrupt_not_a_crash(plain_store):
    """Old: json.loads raised RecursionError, which nothing caught."""
    path = _entry_path(plain_store)
    path.parent.mkdir(parents=True)
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.warns(StoreWarning, match="corrupt"):
        assert plain_store.get(KEY) is None
    assert plain_store.entries() == []


def test_an_oversized_entry_is_skipped_unread(plain_store, monkeypatch):
    """Old: read whole into memory whatever its size (a sparse 10 GB file costs no disk)."""
    path = _entry_path(plain_store)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(MAX_ENTRY_BYTES + 1)
    read = []
    monkeypatch.setattr(os, "read", lambda *a: read.append(a) or b"")
    with pytest.warns(StoreWarning, match="not a regular file of at most"):
        assert plain_store.get(KEY) is None
    assert read == []


def test_a_shipped_entry_must_be_in_the_manifest(tmp_path):
    """Old: any file under cached_results/ with the right digest was served."""
    shipped = ResultStore(tmp_path / "shipped", shipped_dir=None)
    shipped.put(KEY, {"v": "listed"})
    write_manifest(tmp_path / "shipped")
    store = ResultStore(tmp_path / "user", shipped_dir=tmp_path / "shipped")
    assert store.get(KEY) == {"v": "listed"}
    other = Key.make("m" * 16, "d" * 16, "example", "x", "head", {"seed": 2})
    _plant(shipped, other, {"v": "planted after the manifest"})  # by hand: no signature, not listed
    with pytest.warns(StoreWarning, match="not written by this store"):
        assert store.get(other) is None
    entry_path = tmp_path / "shipped" / KEY.digest[:2] / f"{KEY.digest}.json"
    entry = json.loads(entry_path.read_text())
    entry["result"]["v"] = "edited"
    entry_path.write_text(canonical(entry))
    with pytest.warns(StoreWarning, match="not written by this store"):
        assert store.get(KEY) is None


def test_a_user_store_that_is_the_shipped_folder_reads_its_manifest_without_warning(tmp_path):
    """``PRUNELENS_CACHE=cached_results`` (a relative path to the shipped folder): an entry another
    machine signed is vouched for by the manifest in either role; it warned "not written by this
    store" (then found it as shipped)."""
    import warnings

    shipped = ResultStore(tmp_path / "shipped", shipped_dir=None)
    shipped.put(KEY, {"v": "listed"})
    path = tmp_path / "shipped" / KEY.digest[:2] / f"{KEY.digest}.json"
    entry = json.loads(path.read_text())
    entry["mac"] = "0" * 64  # signed by someone else's secret
    path.write_text(canonical(entry))
    write_manifest(tmp_path / "shipped")
    store = ResultStore(tmp_path / "shipped" / ".." / "shipped", shipped_dir=tmp_path / "shipped")
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert store.get(KEY) == {"v": "listed"}
    other = ResultStore(tmp_path / "user", shipped_dir=tmp_path / "shipped")  # a real user store: signatures
    _plant(other, KEY, {"v": "unsigned"})
    with pytest.warns(StoreWarning, match="not written by this store"):
        assert other.get(KEY) == {"v": "listed"}  # the user copy is refused, the shipped one read


def test_a_shipped_store_from_before_0_3_keeps_its_manifest(tmp_path):
    """A store written by 0.2's precompute lists its entries in MANIFEST.json: still read."""
    from prunelens.analysis.cache import MANIFEST_NAME, OLD_MANIFEST_NAME

    shipped = ResultStore(tmp_path / "shipped", shipped_dir=None)
    shipped.put(KEY, {"v": "listed"})
    assert write_manifest(tmp_path / "shipped") == 1
    (tmp_path / "shipped" / MANIFEST_NAME).rename(tmp_path / "shipped" / OLD_MANIFEST_NAME)
    assert KEY.digest in load_manifest(tmp_path / "shipped")
    store = ResultStore(tmp_path / "user", shipped_dir=tmp_path / "shipped")
    assert store.get(KEY) == {"v": "listed"}


def test_sessions_on_a_store_recompute_a_planted_curve_point(tiny_loaded, tiny_csv, tmp_path):
    """End to end through open_session: a planted mask evaluation claiming 100% accuracy is not
    what the Prune slider shows."""
    store = ResultStore(tmp_path / "s", shipped_dir=None)
    session = open_session(data=str(tiny_csv), loaded=tiny_loaded, store=store)
    mask = np.ones((2, 4))
    mask[1, 2] = 0
    from prunelens.analysis.operations import mask_keys

    fake = {"accuracy": 1.0, "loss": 0.0, "margin": 9.0}
    _plant(store, mask_keys(session, "head", mask)["fp32"], {"base": fake, "pruned": fake, "delta": fake})
    with pytest.warns(StoreWarning, match="not written by this store"):
        result, cached = evaluate_mask(session, "head", mask)
    assert not cached and result["pruned"]["margin"] != 9.0


def test_tokenizing_with_another_length_keeps_the_model_key(tiny_bert_dir):
    """The tokenizer's truncation/padding state changes with every call (a training run encodes
    with max_length=64): the key must not, or stored results vanish depending on what ran first."""
    loaded = load_model(str(tiny_bert_dir))
    from prunelens.analysis.fingerprints import model_fingerprint

    before = model_fingerprint(loaded.model, loaded.tokenizer)
    loaded.tokenizer(["good movie"] * 3, truncation=True, max_length=5, padding="max_length")
    assert model_fingerprint(loaded.model, loaded.tokenizer) == before
