"""The fast kernel's BERT family (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT, MiniLM): absolute
position and token-type embeddings (ELECTRA: projected to the hidden size), LayerNorms at
``attention.output.LayerNorm`` and ``output.LayerNorm``; the head is BERT's pooler + linear
classifier or a head that reads position 0 itself (RoBERTa's, ELECTRA's)."""

from __future__ import annotations

import torch
from torch import nn

from prunelens.analysis.fastpath import on_device
from prunelens.analysis.kernels import Ends, Kernel
from prunelens.analysis.layout import encoder_layers


class BertEnds(Ends):
    def __init__(self, model: nn.Module, device: torch.device, headless: bool):
        super().__init__(model, device, headless)
        base = model.base_model
        project = getattr(base, "embeddings_project", None)
        self.project = None if project is None else on_device(project, device)
        pooler = getattr(base, "pooler", None)
        self.pooler = None if pooler is None else on_device(pooler, device)
        self.classifier = None if headless else on_device(model.classifier, device)

    def embed(self, batch) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids}
        if batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids
        x = self.embeddings(**kwargs)
        return self.project(x) if self.project is not None else x

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        seq = cls[:, None, :]
        if self.pooler is not None and isinstance(self.classifier, nn.Linear):
            return self.classifier(self.pooler(seq))
        return self.classifier(seq)


def unsupported(model: nn.Module) -> str | None:
    if getattr(model.config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return "relative position embeddings"
    for layer in encoder_layers(model):
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is None or not all(hasattr(attn, n) for n in ("query", "key", "value")):
            return "attention layout"
        if getattr(layer, "crossattention", None) is not None:
            return "cross-attention"
    return None


KERNEL = Kernel(attention_norm="attention.output.LayerNorm", output_norm="output.LayerNorm",
                activation="intermediate.intermediate_act_fn", ends=BertEnds, unsupported=unsupported)
