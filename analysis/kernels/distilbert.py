"""The fast kernel's DistilBERT: BERT's post-LN block under other names (``sa_layer_norm``,
``output_layer_norm``, ``ffn.activation``); word + absolute position embeddings, no token types;
the head reads [CLS] through ``pre_classifier``, a ReLU and ``classifier``
(``DistilBertForSequenceClassification``)."""

from __future__ import annotations

import torch
from torch import nn

from prunelens.analysis.fastpath import on_device
from prunelens.analysis.kernels import Ends, Kernel


class DistilBertEnds(Ends):
    def __init__(self, model: nn.Module, device: torch.device, headless: bool):
        super().__init__(model, device, headless)
        if not headless:
            self.pre_classifier = on_device(model.pre_classifier, device)
            self.classifier = on_device(model.classifier, device)

    def embed(self, batch) -> torch.Tensor:
        return self.embeddings(batch.input_ids)

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.pre_classifier(cls)))


def unsupported(model: nn.Module) -> str | None:
    if not hasattr(model, "pre_classifier") and hasattr(model, "classifier"):
        return "a DistilBERT head other than pre_classifier + classifier"
    return None


KERNEL = Kernel(attention_norm="sa_layer_norm", output_norm="output_layer_norm",
                activation="ffn.activation", ends=DistilBertEnds, unsupported=unsupported)
