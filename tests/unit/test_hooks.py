"""``prunelens.analysis.hooks``: the one hook scope on a shared model and private copies (issue 16, item 2)."""

from __future__ import annotations

import threading

import pytest
import torch

from prunelens.analysis.hooks import hooked, model_lock, private_copy


def _hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_hooked_removes_its_hooks_and_releases_the_lock_on_an_error(tiny_loaded):
    model = tiny_loaded.model
    seen = []
    dense = tiny_loaded.layers()[0].output.dense
    with pytest.raises(RuntimeError, match="inside"):
        with hooked(model, pre=[(dense, lambda m, a: seen.append("pre"))],
                    post=[(dense, lambda m, a, o: seen.append("post"))]):
            assert _hooks(model) == 2
            dense(torch.zeros(1, dense.in_features))
            raise RuntimeError("inside")
    assert seen == ["pre", "post"] and _hooks(model) == 0
    got = []

    def take_and_release() -> None:  # another thread can take the lock: it was released
        lock = model_lock(model)
        got.append(lock.acquire(timeout=1))
        if got[-1]:
            lock.release()

    thread = threading.Thread(target=take_and_release)
    thread.start()
    thread.join()
    assert got == [True]


def test_a_private_copy_waits_for_another_threads_hooks_and_carries_none(tiny_bert_dir):
    from prunelens.analysis.models import load_model

    model = load_model(str(tiny_bert_dir)).model
    dense = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    inside, release, copies = threading.Event(), threading.Event(), []

    def session_with_hooks():
        with hooked(model, post=[(dense, lambda m, a, o: None)]):
            inside.set()
            release.wait(10)

    other = threading.Thread(target=session_with_hooks)
    other.start()
    inside.wait(10)
    copier = threading.Thread(target=lambda: copies.append(private_copy(model)))
    copier.start()
    copier.join(0.3)
    assert copier.is_alive() and not copies  # the copy waits while the other session's hooks are on
    release.set()
    other.join(10)
    copier.join(10)
    assert len(copies) == 1 and _hooks(copies[0]) == 0 and _hooks(model) == 0
    assert copies[0] is not model
