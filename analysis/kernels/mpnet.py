"""The fast kernel's MPNet: BERT's post-LN block (LayerNorms at ``attention.LayerNorm`` and
``output.LayerNorm``) whose attention scores get a relative-position bias, one value per
(head, query − key distance bucket) from the encoder's ``relative_attention_bias`` table, the
same in every layer (a pruned layer uses its kept heads' slices). The bias depends only on the
sequence length, so it is computed once per length and shared. Word + position embeddings (the
embeddings module numbers positions from the padding id itself); the head is
``MPNetClassificationHead`` (dense, tanh, out_proj on position 0)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from prunelens.analysis.fastpath import on_device
from prunelens.analysis.kernels import Ends, Kernel


class MPNetEnds(Ends):
    def __init__(self, model: nn.Module, device: torch.device, headless: bool):
        super().__init__(model, device, headless)
        base = model.base_model
        self.table = on_device(base.encoder.relative_attention_bias, device)
        self.bucket = base.encoder.relative_position_bucket
        # the bucket count transformers' ``compute_position_bias`` uses (its default argument)
        self.buckets = inspect.signature(base.encoder.compute_position_bias).parameters["num_buckets"].default
        self.classifier = None if headless else on_device(model.classifier, device)
        self._bias: dict[int, torch.Tensor] = {}

    def embed(self, batch) -> torch.Tensor:
        return self.embeddings(input_ids=batch.input_ids)

    def classify(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(cls[:, None, :])

    def score_bias(self, seq_len: int) -> torch.Tensor:
        bias = self._bias.get(seq_len)
        if bias is None:  # as MPNetEncoder.compute_position_bias, for one sequence
            position = torch.arange(seq_len, device=self.table.weight.device)
            relative = position[None, :] - position[:, None]  # key − query
            values = self.table(self.bucket(relative, num_buckets=self.buckets))  # (T, T, heads)
            bias = self._bias[seq_len] = values.permute(2, 0, 1).unsqueeze(0).contiguous()
        return bias


KERNEL = Kernel(attention_norm="attention.LayerNorm", output_norm="output.LayerNorm",
                activation="intermediate.intermediate_act_fn", ends=MPNetEnds)
