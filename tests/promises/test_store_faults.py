"""Result-store faults: every broken entry or store is survived with a warning, the result is
recomputed or served, and nothing already computed is lost.

Covers truncated, corrupted, zero-byte, foreign-version, mismatched and unreadable entries; a
writer SIGKILLed mid-write (the key is then absent or complete, never half); several processes
writing one key at once; and a read-only or full store (simulated: the tests run as root, so
``chmod`` would not stop a write; ``os.replace``/``os.fsync``/``mkdir`` raise the OS errors).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from prunelens.analysis.cache import FORMAT_VERSION, Key, ResultStore, StoreWarning, write_manifest

ROOT = Path(__file__).resolve().parents[2]
# (a kind without a result schema: these tests store small made-up results)
KEY = Key.make("m" * 16, "d" * 16, "example", "magnitude", "head", {"seed": 1})


def _entry_path(store: ResultStore, key: Key = KEY) -> Path:
    return store._path(store.user_dir, key)


def _score_path(session, method="magnitude", unit="head") -> Path:
    from prunelens.analysis.methods import get_method

    params = get_method(method).validate({})
    return _entry_path(session.store, session.key("scores", method, unit, params))


# ---------------------------------------------------------------------------------------------
# damaged entries: warned about, ignored, recomputed, rewritten


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _old_version(path: Path) -> None:
    entry = json.loads(path.read_text())
    entry["format"] = FORMAT_VERSION - 1
    path.write_text(json.dumps(entry))


def _future_version(path: Path) -> None:
    entry = json.loads(path.read_text())
    entry["format"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(entry))


def _not_an_object(path: Path) -> None:
    path.write_text("[1, 2, 3]")


def _wrong_key(path: Path) -> None:
    entry = json.loads(path.read_text())
    entry["digest"] = "0" * 64  # e.g. a file copied under another key's name
    path.write_text(json.dumps(entry))


def _no_result(path: Path) -> None:
    entry = json.loads(path.read_text())
    del entry["result"]
    path.write_text(json.dumps(entry))


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGE = [
    ("truncated", _truncate, "is corrupt or truncated"),
    ("random-bytes", _corrupt, "is corrupt or truncated"),
    ("zero-bytes", _zero, "is corrupt or truncated"),
    ("old-version", _old_version, f"has format {FORMAT_VERSION - 1}, expected {FORMAT_VERSION}"),
    ("future-version", _future_version, f"has format {FORMAT_VERSION + 1}, expected {FORMAT_VERSION}"),
    ("not-an-object", _not_an_object, "is corrupt or truncated"),
    ("wrong-key", _wrong_key, "does not match its key"),
    ("no-result", _no_result, "does not match its key"),
]


@pytest.mark.parametrize("damage, message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_entry_is_recomputed(damage, message, tiny_session):
    from prunelens.analysis.operations import compute_scores

    first = compute_scores(tiny_session, "magnitude", "head")
    assert not first.cached
    path = _score_path(tiny_session)
    assert path.exists()
    damage(path)
    with pytest.warns(StoreWarning, match=message):
        again = compute_scores(tiny_session, "magnitude", "head")
    assert not again.cached  # recomputed, not served from the bad entry
    np.testing.assert_array_equal(again.scores, first.scores)
    # ... and the entry was rewritten whole: the next read is a clean hit
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        third = compute_scores(tiny_session, "magnitude", "head")
    assert third.cached
    np.testing.assert_array_equal(third.scores, first.scores)


def test_entry_that_is_a_folder(store):
    """An unreadable entry (here a folder where the file should be) warns twice and loses nothing:
    the computed result is still returned to the caller."""
    store.put(KEY, {"x": 1})
    _a_folder(_entry_path(store))
    with pytest.warns(StoreWarning) as record:
        result, cached = store.get_or_compute(KEY, lambda: {"x": 2})
    assert (result, cached) == ({"x": 2}, False)
    messages = [str(w.message) for w in record]
    assert any("is not a regular file" in m for m in messages), messages
    assert any("could not write to the result store" in m for m in messages), messages


def test_damaged_shipped_entry_falls_through(tmp_path):
    """A broken shipped entry is warned about and skipped; a good user entry still wins."""
    shipped = ResultStore(tmp_path / "shipped", shipped_dir=None)
    shipped.put(KEY, {"from": "shipped"})
    _truncate(_entry_path(shipped))
    store = ResultStore(tmp_path / "user", shipped_dir=tmp_path / "shipped")
    with pytest.warns(StoreWarning, match="corrupt or truncated"):
        assert store.get(KEY) is None
    store.put(KEY, {"from": "user"})
    assert store.get(KEY) == {"from": "user"}


def test_cli_reports_bad_entry_as_warning(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch, capsys):
    """Through the CLI: one ``warning:`` line, exit 0, the scores printed."""
    from prunelens.analysis.cli import main

    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    argv = ["score", "--method", "magnitude", "--model", str(tiny_bert_dir), "--data", str(tiny_csv),
            "--quiet", "--json", str(tmp_path / "a.json")]
    assert main(argv) == 0
    (entry,) = (tmp_path / "store").glob("*/*.json")
    _corrupt(entry)
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 1 and "is corrupt or truncated; ignoring and recomputing" in warnings_[0]
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["scores"] == b["scores"] and b["cached"] is False


# ---------------------------------------------------------------------------------------------
# unwritable stores: read-only, full, no folder — a warning, the result kept, nothing lost


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES],
                         ids=["read-only", "disk-full", "no-permission"])
def test_unwritable_store_keeps_result(code, tiny_session, monkeypatch):
    from prunelens.analysis.operations import compute_scores

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(StoreWarning, match=f"could not write to the result store .*{os.strerror(code)}"):
        result = compute_scores(tiny_session, "magnitude", "head")
    assert result.scores.shape == (2, 4) and not result.cached
    folder = tiny_session.store.user_dir
    assert [p for p in folder.rglob("*") if p.is_file()] == []  # no temp file left behind


def test_full_disk_during_write(store, monkeypatch):
    """ENOSPC while flushing: the old entry under that key survives intact."""
    store.put(KEY, {"v": "old"})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.warns(StoreWarning, match="No space left on device"):
        assert store.put(KEY, {"v": "new"}) is False
    monkeypatch.undo()
    assert store.get(KEY) == {"v": "old"}
    assert [p.name for p in _entry_path(store).parent.iterdir()] == [_entry_path(store).name]


def test_store_folder_cannot_be_created(tmp_path, monkeypatch):
    """The store location is a file (or on a read-only mount): computing still works."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    store = ResultStore(blocker / "store", shipped_dir=None)
    with pytest.warns(StoreWarning) as record:
        result, cached = store.get_or_compute(KEY, lambda: [1.0, 2.0])
    assert (result, cached) == ([1.0, 2.0], False)
    messages = [str(w.message) for w in record]
    assert "unreadable (Not a directory)" in messages[0]
    assert "could not write to the result store" in messages[1]


def test_read_only_user_store_still_serves_shipped(tmp_path, monkeypatch):
    shipped = ResultStore(tmp_path / "shipped", shipped_dir=None)
    shipped.put(KEY, {"from": "shipped"})
    write_manifest(tmp_path / "shipped")
    store = ResultStore(tmp_path / "user", shipped_dir=tmp_path / "shipped")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # a hit needs no write
        assert store.get_or_compute(KEY, lambda: pytest.fail("recomputed")) == ({"from": "shipped"}, True)


# ---------------------------------------------------------------------------------------------
# processes: a writer killed mid-write; several writers of one key


_WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
from prunelens.analysis.cache import Key, ResultStore
store = ResultStore({store!r}, shipped_dir=None)
key = Key.make("m" * 16, "d" * 16, "example", "magnitude", "head", {{"seed": 1}})
writer, rounds, size, pause = {writer}, {rounds}, {size}, {pause}
if pause:  # hold the process inside the write, after the data went out, before the rename
    real_fsync = os.fsync
    def slow_fsync(fd):
        real_fsync(fd)
        print("in-write", flush=True)
        time.sleep(pause)
    os.fsync = slow_fsync
for i in range(rounds):
    store.put(key, {{"writer": writer, "round": i, "values": [writer * 1000 + i] * size}})
print("done", flush=True)
"""


def _spawn(store_dir: Path, writer: int = 1, rounds: int = 1, size: int = 1000,
           pause: float = 0.0) -> subprocess.Popen:
    code = _WRITER.format(root=str(ROOT), store=str(store_dir), writer=writer, rounds=rounds,
                          size=size, pause=pause)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _check_whole(result) -> None:
    """A result is complete: every value belongs to the same writer and round."""
    values = result["values"]
    assert values and len(set(values)) == 1
    assert values[0] == result["writer"] * 1000 + result["round"]


def test_writer_killed_inside_write(tmp_path):
    """SIGKILL after the bytes are out but before the rename: the key stays absent."""
    store = ResultStore(tmp_path / "store", shipped_dir=None)
    proc = _spawn(store.user_dir, size=2_000_000, pause=30)
    assert proc.stdout.readline().strip() == "in-write"
    temps = list(store.user_dir.rglob("*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 2_000_000  # the half-made file exists
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert store.get(KEY) is None  # absent, not half
        assert store.entries() == []  # the orphaned temp file is never read as an entry
    result, cached = store.get_or_compute(KEY, lambda: {"writer": 9, "round": 0, "values": [9000]})
    assert not cached and store.get(KEY) == result


def test_writer_killed_at_random_moments(tmp_path):
    """A process rewriting a big entry over and over, killed at 5 random moments: after each kill
    the key holds a complete entry or none, and a read never warns."""
    store = ResultStore(tmp_path / "store", shipped_dir=None)
    rng = random.Random(7)
    outcomes = []
    for trial in range(5):
        proc = _spawn(store.user_dir, writer=trial + 1, rounds=1000, size=300_000)
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            result = store.get(KEY)
        if result is not None:
            _check_whole(result)
        outcomes.append(None if result is None else (result["writer"], result["round"]))
    assert any(o is not None for o in outcomes), outcomes  # the test did exercise rewrites
    print("kill outcomes (writer, round) or None:", outcomes)


def test_two_writers_one_key(tmp_path):
    """Three processes write one key 40 times each while this process reads it: every read is
    a complete entry from one writer (or a miss before the first write), never a mix."""
    store = ResultStore(tmp_path / "store", shipped_dir=None)
    procs = [_spawn(store.user_dir, writer=w, rounds=40, size=20_000) for w in (1, 2, 3)]
    seen, reads = set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        while any(p.poll() is None for p in procs):
            result = store.get(KEY)
            reads += 1
            if result is not None:
                _check_whole(result)
                seen.add(result["writer"])
        for p in procs:
            assert p.wait(timeout=60) == 0
            assert p.stdout.read().strip() == "done"
        final = store.get(KEY)
    _check_whole(final)
    assert final["round"] == 39 and final["writer"] in (1, 2, 3)
    assert reads > 0 and seen <= {1, 2, 3}
    print(f"concurrent writers: {reads} reads, complete entries seen from writers {sorted(seen)}")
    assert list(store.user_dir.rglob("*.tmp")) == []  # every writer cleaned up by renaming


def test_ctrl_c_mid_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """A KeyboardInterrupt between the temp file and the rename (seen in a swept store) must not
    orphan the temp file; the entry is simply absent."""
    store = ResultStore(tmp_path, shipped_dir=None)
    key = Key.make("m", "d", "scores", "x", "head", {})

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr("prunelens.analysis.cache.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put(key, {"scores": [1.0]})
    assert list(tmp_path.rglob("*")) == [tmp_path / key.digest[:2]]  # the folder, nothing in it
    assert store.get(key) is None
