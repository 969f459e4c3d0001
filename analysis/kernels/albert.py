"""The fast kernel's ALBERT: BERT's post-LN block with the attention's residual LayerNorm inside
the attention module (``attention.LayerNorm``) and the FFN's at ``full_layer_layer_norm``. The
layers are the per-depth views of the one shared layer (:mod:`prunelens.analysis.shared_layers`),
so each depth has its own mask row and plan over the same weights. Embeddings of
``embedding_size`` (word, position, token type) are projected to the hidden size by the
encoder's ``embedding_hidden_mapping_in``; the head is the pooler (dense + tanh on [CLS]) and a
linear classifier (``AlbertForSequenceClassification``)."""

from __future__ import annotations

import torch
from torch import nn

from prunelens.analysis.fastpath import on_device
from prunelens.analysis.kernels import Ends, Kernel


class AlbertEnds(Ends):
    def __init__(self, model: nn.Module, device: torch.device, headless: bool):
        super().__init__(model, device, headless)
        base = model.base_model
        self.project = on_device(base.encoder.embedding_hidden_mapping_in, device)
        if not headless:
            self.pooler = on_device(base.pooler, device)
            self.classifier = on_device(model.classifier, device)

    def embed(self, batch) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids}
        if batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids
        return self.project(self.embeddings(**kwargs))

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(cls)))


def unsupported(model: nn.Module) -> str | None:
    if hasattr(model, "classifier") and getattr(model.base_model, "pooler", None) is None:
        return "an ALBERT classifier without its pooler"
    return None


KERNEL = Kernel(attention_norm="attention.LayerNorm", output_norm="full_layer_layer_norm",
                activation="activation", ends=AlbertEnds, unsupported=unsupported)
