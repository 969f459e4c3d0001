"""Build a BERT-base-shaped classifier folder (and the default's dev split as a CSV) for scale work.

BERT-base's shape (12 layers x 12 heads, hidden 768, FFN 3072) from a ``BertConfig``, with the
embedded default's tokenizer (the bert-base-uncased vocabulary), randomly initialised (seed 0) and
*briefly* fine-tuned on the Rotten Tomatoes train split, so its margins are those of a trained
classifier rather than of a random one (the checked-bf16 path recomputes close calls, so margins
decide how much work a slider move is): the bottom ``frozen`` layers stay random, their output is
computed once for the training examples, and the top layers, the pooler and the classifier are
trained on it for a few epochs. A few minutes on 2 cores; dev accuracy about 0.6 (a real BERT-base
fine-tuned on RT is ~0.88, so it is *shaped* like BERT-base, not as good as one).

    python benchmarks/bert_base.py --out /tmp/bert-base-rt
    prunelens bench --model /tmp/bert-base-rt --data /tmp/bert-base-rt/dev.csv

``--family distilbert|mpnet|albert|deberta-v2|modernbert`` builds the same shape from that family's
transformers config instead (random weights, seed 0, not trained: for speed measurements only),
with the same tokenizer and dev CSV:

    python benchmarks/bert_base.py --family distilbert --out /tmp/distilbert-base

Writes ``DIR`` (``config.json``, ``model.safetensors``, tokenizer files, ``recipe.json``) and
``DIR/dev.csv`` (the 872 dev sentences, ``text,label``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunelens.analysis import data as data_mod  # noqa: E402
from prunelens.analysis.models import load_default  # noqa: E402


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """The (batch, 1, 1, keys) additive key mask BERT's layers take."""
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def build(out: Path, frozen: int = 10, train_examples: int = 2048, epochs: int = 4,
          batch_size: int = 32, max_length: int = 64, lr: float = 2e-4, seed: int = 0) -> dict:
    from transformers import BertConfig, BertForSequenceClassification

    start = time.time()
    torch.manual_seed(seed)
    tokenizer = load_default().tokenizer
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    model = BertForSequenceClassification(config).eval()
    train = data_mod.rotten_tomatoes("train")
    rows = np.random.default_rng(seed).permutation(len(train))[:train_examples]
    texts, labels = [train.texts[i] for i in rows], torch.as_tensor(train.labels[rows])
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length",
                    return_tensors="pt")
    bert = model.bert
    hidden = []
    with torch.inference_mode():  # the frozen bottom: computed once
        for s in range(0, len(texts), 128):
            ids, mask = enc["input_ids"][s:s + 128], enc["attention_mask"][s:s + 128]
            h = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            ext = _additive(mask)
            for layer in bert.encoder.layer[:frozen]:
                h = _hidden(layer(h, attention_mask=ext))
            hidden.append(h.clone())
    hidden = torch.cat(hidden)
    top = list(bert.encoder.layer[frozen:])
    params = [p for m in [*top, bert.pooler, model.classifier] for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    model.train()
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(texts)), len(texts) // batch_size):
            b = torch.as_tensor(batch)
            h = hidden[b]
            ext = _additive(enc["attention_mask"][b])
            for layer in top:
                h = _hidden(layer(h, attention_mask=ext))
            logits = model.classifier(model.dropout(bert.pooler(h)))
            loss = torch.nn.functional.cross_entropy(logits, labels[b])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    dev = data_mod.rotten_tomatoes("dev")
    import pandas as pd

    pd.DataFrame({"text": dev.texts, "label": dev.labels}).to_csv(out / "dev.csv", index=False)
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(dev), 64):
            e = tokenizer(dev.texts[s:s + 64], truncation=True, max_length=128, padding=True,
                          return_tensors="pt")
            correct += int((model(**e).logits.argmax(-1) == torch.as_tensor(dev.labels[s:s + 64])).sum())
    recipe = {"shape": "bert-base (12x12, hidden 768, FFN 3072)", "init": f"random, seed {seed}",
              "trained": f"layers {frozen}-11, pooler, classifier on {train_examples} RT train "
                         f"examples x {epochs} epochs (bottom {frozen} layers random, frozen)",
              "first_loss": round(losses[0], 4), "last_loss": round(float(np.mean(losses[-10:])), 4),
              "dev_accuracy": round(correct / len(dev), 4), "seconds": round(time.time() - start, 1)}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return recipe


# BERT-base's shape in each family's own config keys (DistilBERT: n_layers/n_heads/dim/hidden_dim)
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
FAMILY_CONFIGS: dict[str, tuple[str, dict]] = {
    "bert-random": ("BertConfig", _BASE),  # BERT untrained: the families' equal for speed work
    "distilbert": ("DistilBertConfig", dict(dim=768, n_layers=12, n_heads=12, hidden_dim=3072)),
    "mpnet": ("MPNetConfig", _BASE),
    "albert": ("AlbertConfig", dict(_BASE, embedding_size=128)),  # one layer's weights shared by all 12
    "deberta-v2": ("DebertaV2Config", dict(_BASE, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                           position_biased_input=False, type_vocab_size=0)),
    "modernbert": ("ModernBertConfig", _BASE),  # FFN 3072 = the GLU's width (Wi is 2 x 3072)
}


def build_family(out: Path, family: str, seed: int = 0) -> dict:
    """BERT-base's shape from ``family``'s config: random weights (seed ``seed``), untrained."""
    import pandas as pd
    import transformers
    from transformers import AutoModelForSequenceClassification

    start = time.time()
    tokenizer = load_default().tokenizer
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # these families read no token types
    class_name, sizes = FAMILY_CONFIGS[family]
    config = getattr(transformers, class_name)(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                               num_labels=2, id2label={0: "negative", 1: "positive"},
                                               label2id={"negative": 0, "positive": 1}, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    config.architectures = [type(model).__name__]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    dev = data_mod.rotten_tomatoes("dev")
    pd.DataFrame({"text": dev.texts, "label": dev.labels}).to_csv(out / "dev.csv", index=False)
    recipe = {"family": family, "config": class_name, "shape": "bert-base (12x12, hidden 768, FFN 3072)",
              "init": f"random, seed {seed}", "trained": "no (speed measurements only)",
              "parameters": sum(p.numel() for p in model.parameters()),
              "seconds": round(time.time() - start, 1)}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    return recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frozen", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--family", choices=["bert", *FAMILY_CONFIGS], default="bert",
                        help="the config family (bert: BertConfig, briefly trained; others: random weights)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.family == "bert":
        print(json.dumps(build(args.out, args.frozen, epochs=args.epochs), indent=2))
    else:
        print(json.dumps(build_family(args.out, args.family), indent=2))


if __name__ == "__main__":
    main()
