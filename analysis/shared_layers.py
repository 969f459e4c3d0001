"""Shared layers (ALBERT): one layer's weights run at every depth. prunelens gives every depth its
own *view* — a copy of the layer's modules that shares its parameters — so a hook (a gate, a
capture) put on a view acts at one depth only, and a score or mask belongs to one (layer, head).

The views are not registered submodules: the model's parameters and ``state_dict`` are the
original ones. :func:`prepare` puts them in (once, at load; a no-op for other families).
"""

from __future__ import annotations

import copy

from torch import nn


def view_of(layer: nn.Module) -> nn.Module:
    """A copy of ``layer``'s modules that shares its parameters (and config): hooks put on the
    view act at one depth only."""
    memo = {id(p): p for p in layer.parameters()}
    memo.update({id(b): b for b in layer.buffers()})
    for module in layer.modules():
        config = getattr(module, "config", None)
        if config is not None:
            memo[id(config)] = config
    return copy.deepcopy(layer, memo)


class SharedLayerViews(nn.Module):
    """ALBERT's transformer, run through one view per depth (:func:`view_of` of the layer that
    depth uses). The views are not registered: parameters and ``state_dict`` are the original
    ones; ``train()`` reaches the views."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.config = transformer.config
        self.embedding_hidden_mapping_in = transformer.embedding_hidden_mapping_in
        self.albert_layer_groups = transformer.albert_layer_groups
        self.rebuild_views()

    def rebuild_views(self) -> None:
        """One view per depth of the group layers."""
        config = self.config
        per_group = config.num_hidden_layers / config.num_hidden_groups
        views = []
        for depth in range(config.num_hidden_layers):
            group = self.albert_layer_groups[int(depth / per_group)]
            views.extend(view_of(layer) for layer in group.albert_layers)
        for view in views:
            view.train(self.training)
        object.__setattr__(self, "layer_views", views)

    def train(self, mode: bool = True):
        super().train(mode)
        for view in self.__dict__.get("layer_views", ()):
            view.train(mode)
        return self

    def owner_of(self, depth: int) -> nn.Module:
        """The registered layer whose weights the view at ``depth`` runs."""
        config = self.config
        inner = config.inner_group_num
        group = self.albert_layer_groups[int((depth // inner) / (config.num_hidden_layers / config.num_hidden_groups))]
        return group.albert_layers[depth % inner]

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        hidden_states = self.embedding_hidden_mapping_in(hidden_states)
        for view in self.layer_views:
            hidden_states = view(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


def prepare(model: nn.Module) -> nn.Module:
    """Give a shared-layer model its per-depth views (once; a no-op for other families)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    if encoder is not None and type(encoder).__name__ == "AlbertTransformer":
        base.encoder = SharedLayerViews(encoder)
    return model
