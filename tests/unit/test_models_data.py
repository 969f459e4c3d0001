"""Model loading (folder, hub id, default), the architecture check, data sources and batches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from prunelens.analysis.data import from_bytes, load_data, rotten_tomatoes, tokenize_batches
from prunelens.analysis.errors import DataError, ModelError
from prunelens.analysis.models import load_model
from tests.tiny import tiny_frame


def test_tiny_bert_loads_through_the_real_code(tiny_loaded):
    inv = tiny_loaded.inventory
    assert (inv.layers, inv.heads, inv.head_size, inv.hidden, inv.ffn) == (2, 4, 4, 16, 24)
    assert tiny_loaded.source == "folder"
    assert not any(p.requires_grad for p in tiny_loaded.model.parameters())
    assert len(tiny_loaded.fingerprint) == 16


def test_fingerprint_follows_the_weights(tiny_bert_dir):
    a = load_model(str(tiny_bert_dir))
    b = load_model(str(tiny_bert_dir))
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.model.classifier.bias[0] += 1e-3
    b._fingerprint = None
    assert a.fingerprint != b.fingerprint


def test_missing_folder_and_offline_hub_id_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="not found in the local hub cache"):
        load_model("someone/some-bert-that-is-not-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))


def test_non_bert_architecture_is_refused(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no family entry for; it opens these encoder families: .*docs/FAMILIES\.md"):
        load_model(str(tmp_path))


def test_model_without_classification_head_loads_as_a_sentence_encoder(tmp_path):
    """No head: a headless encoder (issue 27), mean-pooled when the folder declares no pooling."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tests.tiny import VOCAB

    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.headless and (loaded.pooling.mode, loaded.pooling.normalize) == ("mean", False)


def test_label_count_mismatch(tiny_loaded):
    frame = tiny_frame(6)
    frame.loc[0, "label"] = 3
    data = from_bytes(frame.to_csv(index=False).encode(), "x.csv")
    with pytest.raises(DataError, match="has label 3 but model .* has 2 labels"):
        tiny_loaded.check_data(data)


def test_default_split_is_fixed_and_disjoint():
    dev, train = rotten_tomatoes("dev"), rotten_tomatoes("train")
    assert len(dev) == 872 and len(train) == 8530 - 872
    assert not set(dev.texts) & set(train.texts) - {""}
    assert rotten_tomatoes("dev").fingerprint == dev.fingerprint
    assert set(np.unique(dev.labels)) == {0, 1}


def test_csv_and_jsonl_with_pairs(tmp_path):
    frame = tiny_frame(10, pairs=True)
    frame.to_csv(tmp_path / "d.csv", index=False)
    with open(tmp_path / "d.jsonl", "w") as f:
        for row in frame.to_dict("records"):
            f.write(json.dumps(row) + "\n")
    a, b = load_data(str(tmp_path / "d.csv")), load_data(str(tmp_path / "d.jsonl"))
    assert a.text_pairs is not None and len(a) == 10
    assert a.fingerprint == b.fingerprint
    assert load_data(str(tmp_path / "d.csv"), limit=4).labels.tolist() == frame.label[:4].tolist()


def test_text_labels_are_mapped_and_said_so():
    data = from_bytes(b"text,label\na,pos\nb,neg\nc,pos\n", "t.csv")
    assert data.labels.tolist() == [1, 0, 1]
    assert "neg=0" in data.notes[0]


@pytest.mark.parametrize(
    "payload,name,message",
    [
        (b"", "e.csv", "is empty"),
        (b"sentence,y\nhi,1\n", "c.csv", "needs columns 'text' and 'label'"),
        (b"text,label\n", "h.csv", "has no rows"),
        ("text,label\ncaf\u00e9,1\n".encode("latin-1"), "l.csv", "not UTF-8"),
        (b"text,label\nhi,1\n", "x.parquet", "unsupported data file type"),
        (b"text,label\nhi,-1\n", "n.csv", "non-negative integers"),
    ],
)
def test_bad_files(payload, name, message):
    with pytest.raises(DataError, match=message):
        from_bytes(payload, name)


def test_glue_from_a_local_copy(tmp_path, monkeypatch):
    import datasets

    frame = tiny_frame(8, pairs=True).rename(columns={"text": "sentence1", "text_pair": "sentence2"})
    frame["idx"] = range(len(frame))
    datasets.DatasetDict({"validation": datasets.Dataset.from_pandas(frame)}).save_to_disk(
        str(tmp_path / "mrpc"))
    monkeypatch.setenv("PRUNELENS_GLUE_DIR", str(tmp_path))
    data = load_data("glue:mrpc")
    assert data.metric == "f1" and data.text_pairs is not None and len(data) == 8
    with pytest.raises(DataError, match="unknown GLUE task 'nope'"):
        load_data("glue:nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="GLUE task 'sst2' is not in the local datasets cache"):
        load_data("glue:sst2")


def test_batches_are_length_sorted_and_cover_every_example(tiny_loaded):
    data = from_bytes(tiny_frame(37).to_csv(index=False).encode(), "t.csv")
    batches, truncated = tokenize_batches(tiny_loaded.tokenizer, data, batch_size=8)
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths)
    assert sorted(np.concatenate([b.index.numpy() for b in batches]).tolist()) == list(range(37))
    assert truncated == 0
    long = from_bytes(pd.DataFrame({"text": ["good " * 500], "label": [1]}).to_csv(index=False).encode(), "l.csv")
    batches, truncated = tokenize_batches(tiny_loaded.tokenizer, long, max_length=32)
    assert truncated == 1 and batches[0].input_ids.shape[1] == 32


def test_a_missing_folder_with_a_trailing_slash_is_a_folder_and_offline_says_how_to_go_online(
        tmp_path, monkeypatch):
    # issue 30 items 7 and 11: `--model pruned/` talked about the hub; offline said nothing of --online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"model folder not found: pruned/ does not exist"):
        load_model("pruned/")
    with pytest.raises(ModelError, match=r"add --online to the command"):
        load_model("someone/some-bert-that-is-not-here")
