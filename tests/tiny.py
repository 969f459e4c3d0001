"""Builders for the tiny random BERT and tiny data sets the tests write to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "good", "bad", "great", "awful", "movie", "film", "the", "a", "is", "was", "not", "very",
    "fun", "boring", "plot", "actors", "love", "hate", "it", "this", "and", "but", "so",
]
POSITIVE = ["good", "great", "fun", "love"]
NEGATIVE = ["bad", "awful", "boring", "hate"]


def write_tiny_bert(folder: Path, layers: int = 2, heads: int = 4, hidden: int = 16,
                    ffn: int = 24, num_labels: int = 2, seed: int = 0) -> Path:
    """A random BertForSequenceClassification saved with save_pretrained (safetensors)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=64,
                        num_labels=num_labels, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, architectures=["BertForSequenceClassification"])
    model = BertForSequenceClassification(config)
    # larger weights than the default init so that heads matter measurably
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_frame(n: int = 40, seed: int = 0, pairs: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(i % 2)
        words = list(rng.choice(POSITIVE if label else NEGATIVE, size=2)) + list(
            rng.choice(["the", "movie", "film", "is", "was", "very", "plot", "it"], size=rng.integers(1, 6)))
        rng.shuffle(words)
        row = {"text": " ".join(words), "label": label}
        if pairs:
            row["text_pair"] = " ".join(rng.choice(["the", "plot", "actors", "so"], size=3))
        rows.append(row)
    return pd.DataFrame(rows)


def write_tiny_csv(path: Path, n: int = 40, seed: int = 0, pairs: bool = False) -> Path:
    tiny_frame(n, seed, pairs).to_csv(path, index=False)
    return Path(path)


def assert_run_result_shape(result: dict) -> None:
    """A training run (``train_command``'s answer) holds exactly the one RunResult shape the
    trainers return (:data:`prunelens.analysis.run_result.SHAPE_KEYS`), plus train_command's bookkeeping."""
    from prunelens.analysis.run_result import BOOKKEEPING, SHAPE_KEYS

    assert set(SHAPE_KEYS) <= set(result), set(SHAPE_KEYS) - set(result)
    assert set(result) - set(SHAPE_KEYS) <= set(BOOKKEEPING), set(result) - set(SHAPE_KEYS) - set(BOOKKEEPING)
