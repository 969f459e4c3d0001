"""Content fingerprints of a model and of a data set: what the result store's keys are made of.

A stored number may be served for a computation only when everything that changes it is the
same, so a fingerprint covers every input of the computation and nothing else:

- **model** = the weights (names, shapes, values), the configuration the forward and the
  training read (activation, LayerNorm epsilon, dropout, label names, ... : every field of
  ``config.to_dict()`` except the bookkeeping ones in :data:`CONFIG_BOOKKEEPING`), and the
  tokenizer (its whole pipeline: normaliser with its casing, pre-tokenizer, vocabulary,
  post-processor, plus maximum length, padding/truncation side and special tokens). Not the
  folder's path or name: the same model copied elsewhere keeps its stored results.
- **data** = the parsed columns, each value length-prefixed, so no choice of characters in one
  text can imitate a boundary, and a data set without a pair column differs from one whose pair
  column is empty.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

# config fields that record where a model came from or how transformers was asked to run it,
# not what it computes (numerically identical models differ in them)
CONFIG_BOOKKEEPING = frozenset({
    "_name_or_path", "name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype",
    "_commit_hash", "_attn_implementation_autoset", "_attn_implementation", "output_attentions",
    "output_hidden_states", "return_dict", "use_cache", "gradient_checkpointing",
    "finetuning_task", "task_specific_params", "tokenizer_class",
    "auto_map",  # where custom code would live: never run (trust_remote_code=False), the stock class is
})
# tokenizer settings that are not part of its serialised pipeline but change what it produces
TOKENIZER_SETTINGS = ("model_max_length", "padding_side", "truncation_side", "do_lower_case",
                      "strip_accents", "tokenize_chinese_chars")
# init arguments of a tokenizer that are locations, not behaviour
TOKENIZER_BOOKKEEPING = frozenset({"name_or_path", "vocab_file", "tokenizer_file", "is_local",
                                   "local_files_only", "backend", "added_tokens_decoder"})


def _length_prefixed(h, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def weights_digest(model: nn.Module) -> str:
    """Hash of every tensor in the state dict (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        _length_prefixed(h, name.encode())
        _length_prefixed(h, str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def config_digest(config) -> str:
    """Hash of the configuration fields that change what the model computes."""
    fields = {k: v for k, v in config.to_dict().items() if k not in CONFIG_BOOKKEEPING}
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """Hash of what the tokenizer turns text into: its pipeline, settings and special tokens."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # its pipeline, without the truncation/padding state that every
        # encode call with other lengths rewrites (the model stays the same model)
        pipeline = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        _length_prefixed(h, json.dumps(pipeline, sort_keys=True).encode())
    else:  # a slow tokenizer: its vocabulary and init arguments
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        _length_prefixed(h, json.dumps(vocab).encode())
        init = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items()
                if k not in TOKENIZER_BOOKKEEPING}
        _length_prefixed(h, json.dumps(init, sort_keys=True, default=str).encode())
    settings = {name: getattr(tokenizer, name, None) for name in TOKENIZER_SETTINGS}
    settings["special"] = getattr(tokenizer, "special_tokens_map", {})
    _length_prefixed(h, json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_fingerprint(model: nn.Module, tokenizer=None) -> str:
    """The model part of a store key: weights + configuration + tokenizer (16 hex digits)."""
    h = hashlib.sha256()
    for part in (weights_digest(model), config_digest(model.config),
                 tokenizer_digest(tokenizer) if tokenizer is not None else "no tokenizer"):
        _length_prefixed(h, part.encode())
    return h.hexdigest()[:16]


def data_fingerprint(texts: list[str], pairs: list[str] | None, labels, scores=None,
                     pair_kind: str | None = None) -> str:
    """The data part of a store key: the parsed texts, pairs and labels (16 hex digits); STS
    ``scores`` and a ``pair_kind`` (``sts``, ``retrieval``) are hashed only where a file has them,
    so every labelled data set keeps its fingerprint."""
    h = hashlib.sha256()
    h.update(b"pairs" if pairs is not None else b"single")
    h.update(len(texts).to_bytes(8, "little"))
    for i, text in enumerate(texts):
        _length_prefixed(h, text.encode("utf-8", "surrogatepass"))
        if pairs is not None:
            _length_prefixed(h, pairs[i].encode("utf-8", "surrogatepass"))
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    if pair_kind is not None:
        _length_prefixed(h, pair_kind.encode())
    if scores is not None:
        h.update(np.asarray(scores, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
