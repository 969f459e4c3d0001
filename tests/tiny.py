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
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    tokenizer = tiny_tokenizer(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=64,
                        num_labels=num_labels, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, architectures=["BertForSequenceClassification"])
    return save_tiny(folder, BertForSequenceClassification(config), tokenizer)


def tiny_tokenizer(folder: Path):
    """The tiny vocabulary written into ``folder`` (made if missing) and its BERT tokenizer."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)


def save_tiny(folder: Path, model, tokenizer) -> Path:
    """Scale ``model``'s matrices up (larger than the default init, so that heads matter
    measurably: draws from torch's global generator, seed it first) and save it with its
    tokenizer (save_pretrained, safetensors)."""
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


# the tiny random checkpoint of every family (prunelens.analysis.layout.FAMILIES), built from the
# family's transformers config with the tiny WordPiece vocabulary above ([PAD] = 0)
_NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
FAMILY_CONFIGS: dict[str, tuple[str, dict]] = {
    "bert": ("BertConfig", dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=24, max_position_embeddings=64, **_NO_DROPOUT)),
    "roberta": ("RobertaConfig", dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=24, max_position_embeddings=66, type_vocab_size=1,
                                      **_NO_DROPOUT)),
    "distilbert": ("DistilBertConfig", dict(dim=16, n_layers=2, n_heads=4, hidden_dim=24,
                                            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                                            seq_classif_dropout=0.0)),
    "albert": ("AlbertConfig", dict(embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                    intermediate_size=24, num_hidden_groups=1, inner_group_num=1,
                                    max_position_embeddings=64, classifier_dropout_prob=0.0,
                                    bos_token_id=2, eos_token_id=3, **_NO_DROPOUT)),
    "deberta-v2": ("DebertaV2Config", dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=24, max_position_embeddings=64,
                                           relative_attention=True, pos_att_type=["p2c", "c2p"],
                                           position_biased_input=False, position_buckets=8,
                                           share_att_key=False, norm_rel_ebd="layer_norm", type_vocab_size=0,
                                           pooler_dropout=0.0, pooler_hidden_size=16, **_NO_DROPOUT)),
    "mpnet": ("MPNetConfig", dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=24, max_position_embeddings=66, **_NO_DROPOUT)),
    "modernbert": ("ModernBertConfig", dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                                            intermediate_size=24, max_position_embeddings=64, local_attention=8,
                                            global_attn_every_n_layers=2, bos_token_id=2, eos_token_id=3,
                                            cls_token_id=2, sep_token_id=3, attention_dropout=0.0,
                                            mlp_dropout=0.0, embedding_dropout=0.0, classifier_dropout=0.0)),
}
TOKEN_TYPES = ("bert", "albert")  # the families whose tiny checkpoint reads token type ids


def write_tiny_family(folder: Path, family: str, headless: bool = False, seed: int = 0) -> Path:
    """A tiny random checkpoint of ``family`` (a key of :data:`FAMILY_CONFIGS`): a sequence
    classifier, or with ``headless`` the bare encoder, saved with save_pretrained."""
    import transformers
    from transformers import AutoModel, AutoModelForSequenceClassification

    folder = Path(folder)
    tokenizer = tiny_tokenizer(folder)
    if family not in TOKEN_TYPES:
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    class_name, sizes = FAMILY_CONFIGS[family]
    config = getattr(transformers, class_name)(vocab_size=len(VOCAB), pad_token_id=0, num_labels=2, **sizes)
    torch.manual_seed(seed)
    model = (AutoModel if headless else AutoModelForSequenceClassification).from_config(config)
    config.architectures = [type(model).__name__]
    return save_tiny(folder, model, tokenizer)
