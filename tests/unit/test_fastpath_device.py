"""The GPU path's plumbing, checked on the CPU (issue 14, item 4): the fast encoder keeps its own
copies of the weights on its device and never moves the model, the precision rule names the
device it judged, and the dashboard offers a device only where torch sees a GPU. Runs on a GPU
are measured by ``benchmarks/gpu_check.sh`` when a GPU machine is lent (docs/PERFORMANCE.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelens.analysis import precision
from prunelens.analysis.evaluate import Evaluator, available_devices
from prunelens.analysis.fastpath import FastEncoder, on_device


def test_on_the_cpu_the_encoder_reads_the_models_own_tensors(tiny_loaded):
    model = tiny_loaded.model
    enc = FastEncoder(model, device="cpu")
    assert enc.ends.embeddings is model.base_model.embeddings and enc.ends.classifier is model.classifier
    assert enc.layers[0].o_w.data_ptr() == model.base_model.encoder.layer[0].attention.output.dense.weight.data_ptr()
    linear = torch.nn.Linear(2, 2)
    assert on_device(linear, torch.device("cpu")) is linear
    moved = on_device(linear, torch.device("meta"))  # any other device: a copy there
    assert moved is not linear and moved.weight.device.type == "meta" and linear.weight.device.type == "cpu"


def test_the_reference_path_runs_where_the_model_is(tiny_session):
    ev = Evaluator(tiny_session.loaded, tiny_session.data, device="cpu", fast=False)
    out = ev.reference_outputs()
    assert out.logits.shape == (len(tiny_session.data), 2) and np.isfinite(out.logits).all()


def test_a_device_without_a_fast_path_says_so(tiny_session):
    ev = Evaluator(tiny_session.loaded, tiny_session.data, device="mps")
    assert ev.fast_encoder() is None and ev.fast_note == "no fast path on mps"


@pytest.mark.parametrize("bf16, want", [
    (True, ("checked-bf16", "native bf16 on cuda")),
    (False, ("fp32", "no native bf16 on this GPU (before Ampere); exact fp32 on cuda")),
])
def test_the_precision_rule_judges_the_gpu_itself(monkeypatch, bf16, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert precision.masked_path("auto", None, "cuda") == want
    assert precision.masked_path("fp32", None, "cuda")[0] == "fp32"
    assert precision.masked_path("auto", True, "cpu")[0] == "checked-bf16"  # the CPU rule is unchanged


def test_devices_offered_follow_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices() == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert available_devices() == ["cpu", "cuda"]


def test_the_sidebar_offers_a_device_only_where_a_gpu_is_seen(open_page, monkeypatch):
    at = open_page("model_data")
    assert not [r for r in at.sidebar.radio if r.label == "Device"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    at.run()
    [radio] = [r for r in at.sidebar.radio if r.label == "Device"]
    assert list(radio.options) == ["cpu", "cuda"] and radio.value == "cpu"
