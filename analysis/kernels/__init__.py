"""What the fast kernel (:mod:`prunelens.analysis.fastpath`) needs to know about one encoder family,
one module per family whose layer the kernel computes.

The kernel computes a post-LayerNorm transformer block — Q/K/V, softmax attention (plus an
optional per-head score bias), the attention output and its residual LayerNorm, an FFN with one
activation and its residual LayerNorm — from the weights the family's layout entry
(:mod:`prunelens.analysis.layout`) names, sliced per mask. What differs between the families that
have such a block is small and lives here, as data and three functions:

- :class:`Kernel`: where a layer keeps its two LayerNorms and its FFN activation (paths inside a
  layer), and which :class:`Ends` the family has;
- :class:`Ends`: the encoder around the layers — the embeddings (tokens → hidden states), the
  classifier head ([CLS] state → logits), and a per-head additive score bias that every layer
  shares (MPNet's relative-position bias; ``None`` elsewhere), computed once per sequence length.

Everything else — the sliced plans, the prefix cache, the [CLS]-only last layer, the checked
bf16 path — is the one shared kernel. A family's ``fast_path`` flag in its layout entry says
that a module ``prunelens.analysis.kernels.<family name>`` (``-`` as ``_``) defines its
``KERNEL``; a test checks that the two agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class Ends:
    """The encoder's ends around its layers, on the kernel's device (the model is never moved)."""

    def __init__(self, model: nn.Module, device: torch.device, headless: bool):
        self.device = device
        self.headless = headless  # a sentence encoder: no head (its output is pooled)
        from prunelens.analysis.fastpath import on_device  # (fastpath imports this module)

        self.embeddings = on_device(model.base_model.embeddings, device)  # every family has them here

    def embed(self, batch) -> torch.Tensor:
        """Hidden states (batch, seq, hidden) entering the first layer."""
        raise NotImplementedError

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        """Logits (batch, labels) from the last layer's output at position 0 (batch, hidden)."""
        raise NotImplementedError

    def score_bias(self, seq_len: int) -> torch.Tensor | None:
        """An additive bias of the attention scores shared by every layer, (1, heads, seq, seq)
        (query × key positions), or None."""
        return None


@dataclass(frozen=True)
class Kernel:
    """One family's fast-kernel entry: paths inside a layer, and its :class:`Ends`."""

    attention_norm: str  # the LayerNorm after the attention's residual add
    output_norm: str  # the LayerNorm after the FFN's residual add
    activation: str  # the FFN activation (a module or function attribute)
    ends: type[Ends]

    # why this family's kernel cannot run a model that the layout entry otherwise opens (a
    # variant the block does not cover), or None when it can
    unsupported: Callable[[nn.Module], str | None] = lambda model: None


def module_name(family_name: str) -> str:
    return f"{__name__}.{family_name.replace('-', '_')}"


def kernel_for(family) -> Kernel | None:
    """The :class:`Kernel` of a layout :class:`~prunelens.analysis.layout.Family` whose
    ``fast_path`` is set (None otherwise, or when no kernel module of its name exists)."""
    if not family.fast_path:
        return None
    try:
        module = importlib.import_module(module_name(family.name))
    except ModuleNotFoundError:
        return None
    return getattr(module, "KERNEL", None)
