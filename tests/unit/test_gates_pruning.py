"""Gates equal weight surgery; physical pruning equals masking; masks hit sparsity exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prunelens.analysis.fingerprints import weights_digest
from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import Masks, gated, hook_count
from prunelens.analysis.pruning import compression, physically_prune, select, sparsity_of


def _logits(model, batch):
    with torch.inference_mode():
        return model(**batch.model_inputs()).logits


@pytest.fixture()
def batch(tiny_session):
    return tiny_session.evaluator.batches[-1]


def test_head_gate_equals_zeroing_output_columns(tiny_loaded, batch):
    inv = tiny_loaded.inventory
    layer, head = 1, 2
    mask = np.ones((inv.layers, inv.heads))
    mask[layer, head] = 0
    with gated(tiny_loaded.model, head=mask):
        gated_logits = _logits(tiny_loaded.model, batch)
    surgery = copy.deepcopy(tiny_loaded.model)
    dense = surgery.base_model.encoder.layer[layer].attention.output.dense
    dense.weight.data[:, head * inv.head_size:(head + 1) * inv.head_size] = 0
    torch.testing.assert_close(gated_logits, _logits(surgery, batch), rtol=0, atol=1e-6)
    assert not torch.allclose(gated_logits, _logits(tiny_loaded.model, batch))


def test_neuron_gate_equals_zeroing_neuron(tiny_loaded, batch):
    inv = tiny_loaded.inventory
    mask = np.ones((inv.layers, inv.ffn))
    mask[0, [3, 7]] = 0
    with gated(tiny_loaded.model, neuron=mask):
        gated_logits = _logits(tiny_loaded.model, batch)
    surgery = copy.deepcopy(tiny_loaded.model)
    surgery.base_model.encoder.layer[0].output.dense.weight.data[:, [3, 7]] = 0
    torch.testing.assert_close(gated_logits, _logits(surgery, batch), rtol=0, atol=1e-6)


def test_block_gates_remove_the_block_output(tiny_loaded, batch):
    surgery = copy.deepcopy(tiny_loaded.model)
    for module in (surgery.base_model.encoder.layer[1].attention.output.dense,
                   surgery.base_model.encoder.layer[0].output.dense):
        module.weight.data.zero_()
        module.bias.data.zero_()
    with gated(tiny_loaded.model, attention=np.array([1.0, 0.0]), ffn=np.array([0.0, 1.0])):
        gated_logits = _logits(tiny_loaded.model, batch)
    torch.testing.assert_close(gated_logits, _logits(surgery, batch), rtol=0, atol=1e-6)


def test_no_hook_left_behind_even_after_an_exception(tiny_loaded):
    mask = np.zeros((2, 4))
    with pytest.raises(RuntimeError, match="boom"):
        with gated(tiny_loaded.model, head=mask, neuron=np.zeros((2, 24)), ffn=np.zeros(2)):
            assert hook_count(tiny_loaded.model) == 6
            raise RuntimeError("boom")
    assert hook_count(tiny_loaded.model) == 0


def test_all_ones_masks_attach_nothing(tiny_loaded):
    with gated(tiny_loaded.model, head=np.ones((2, 4))):
        assert hook_count(tiny_loaded.model) == 0


def test_gates_are_differentiable(tiny_loaded, batch):
    gate = torch.ones(2, 4, requires_grad=True)
    with torch.enable_grad(), gated(tiny_loaded.model, head=gate):
        logits = tiny_loaded.model(**batch.model_inputs()).logits
        (grad,) = torch.autograd.grad(logits.sum(), gate)
    assert grad.shape == (2, 4)
    assert torch.count_nonzero(grad) == 8


def test_wrong_mask_shape_is_refused(tiny_loaded):
    with pytest.raises(ValueError, match="expected 2 layers"):
        with gated(tiny_loaded.model, head=np.ones((3, 4))):
            pass


@pytest.mark.parametrize(
    "masks",
    [
        Masks(head=np.array([[1, 0, 1, 0], [0, 0, 0, 1]])),
        Masks(head=np.array([[0, 0, 0, 0], [1, 1, 0, 1]])),  # a layer with every head pruned
        Masks(neuron=(np.arange(48).reshape(2, 24) % 3 != 0).astype(float)),
        Masks(head=np.array([[1, 1, 0, 1], [1, 0, 1, 1]]), neuron=np.ones((2, 24)) * (np.arange(24) < 5),
              attention=np.array([1, 0]), ffn=np.array([0, 1])),
    ],
    ids=["heads", "empty-layer", "neurons", "everything"],
)
def test_physical_pruning_equals_masking(tiny_session, masks):
    evaluator = tiny_session.evaluator
    masked = evaluator.outputs(masks).logits
    small = physically_prune(tiny_session.loaded.model, masks)
    physical = evaluator.outputs(model=small).logits
    np.testing.assert_allclose(physical, masked, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in tiny_session.loaded.model.parameters())


def test_physical_pruning_does_not_touch_the_original(tiny_loaded):
    before = weights_digest(tiny_loaded.model)
    physically_prune(tiny_loaded.model, Masks(head=np.zeros((2, 4))))

    assert weights_digest(tiny_loaded.model) == before


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
def test_global_selection_hits_sparsity_exactly(sparsity):
    scores = np.random.default_rng(1).random((6, 12))
    mask = select(scores, sparsity)
    assert mask.sum() == 72 - round(sparsity * 72)
    # the removed ones are exactly the lowest scores
    removed = scores[mask == 0]
    kept = scores[mask == 1]
    if len(removed) and len(kept):
        assert removed.max() < kept.min()


def test_layer_scope_removes_same_count_per_layer():
    scores = np.random.default_rng(2).random((6, 12))
    mask = select(scores, 0.5, scope="layer")
    assert (mask.sum(1) == 6).all()
    for layer in range(6):
        assert scores[layer][mask[layer] == 0].max() < scores[layer][mask[layer] == 1].min()


def test_keep_one_per_layer():
    scores = np.arange(24, dtype=float).reshape(6, 4)  # layer 0 holds the lowest scores
    mask = select(scores, 0.25, keep_one_per_layer=True)
    assert mask.sum() == 24 - 6
    assert (mask.sum(1) >= 1).all()
    assert mask[0].tolist() == [0, 0, 0, 1]


def test_threshold_selection_and_errors():
    scores = np.array([[0.1, 0.5], [0.3, 0.05]])
    assert select(scores, threshold=0.3).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ParamError, match="threshold must be a finite number >= 0"):
        select(scores, threshold=-1)
    for bad in (-0.1, 1.0, 1.5, "abc"):
        with pytest.raises(ParamError, match="sparsity must be"):
            select(scores, bad)


def test_ties_are_broken_by_index():
    mask = select(np.zeros((2, 3)), 0.5)
    assert mask.tolist() == [[0, 0, 0], [1, 1, 1]]


def test_compression_accounting_is_exact(tiny_loaded):
    inv = tiny_loaded.inventory
    assert inv.head_params == 4 * 16 * 4 + 3 * 4
    mask = np.ones((2, 4))
    mask[0, :3] = 0
    c = compression(inv, "head", mask)
    assert c.removed == 3 * inv.head_params
    assert c.total == sum(p.numel() for p in tiny_loaded.model.base_model.encoder.parameters())
    assert sparsity_of(mask) == 3 / 8
    # physically pruning the heads removes exactly that many encoder parameters
    small = physically_prune(tiny_loaded.model, Masks(head=mask))
    after = sum(p.numel() for p in small.base_model.encoder.parameters())
    assert c.total - after == c.removed
