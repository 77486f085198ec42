"""The transformer family on a tiny random BERT with a tiny tokenizer (nothing downloaded):
encoding parity, the family contract, resume, and the course's `--classifier BERT`."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from prodcat import Classifier
from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.training.loop import train
from prodcat.workflow.train import make_featurizer
from tests.test_training import WORDS, assert_same_weights, write_titles

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(folder):
    """A 2-layer, 16-wide random BERT and a WordPiece tokenizer over the test words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in WORDS.values() for w in ws.split()})
    pieces = ["##s", "##o", "##a", *"abcdefghijklmnopqrstuvwxyzñ"]
    vocab = {token: i for i, token in enumerate(SPECIAL + words + pieces)}
    core = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def transformer_config(tmp_path, folder, **extra):
    overrides = {
        "model.family": "transformer",
        "model.model_path": str(folder),
        "model.hidden_layers": [],
        "data.cache_dir": str(tmp_path / "cache"),
        "data.max_tokens": 16,
        "tracking.enabled": False,
        "training.progress": False,
        "training.batch_size": 16,
        "training.lr": 0.01,
        "training.optimizer": "adamw",
        **extra,
    }
    return build_config(overrides=overrides)


def test_pieces_through_the_cache_equal_the_tokenizers(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=5)
    cfg = transformer_config(tmp_path, tiny_bert, **{"data.max_tokens": 6})
    featurizer = make_featurizer(cfg)
    splits = load_splits(cfg.data, data, featurizer=featurizer)
    titles = [json.loads(line)["title"] for line in data.read_text("utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    padded = 0
    for split in (splits.train, splits.validation, splits.test):
        rows = [titles[int(line) - 1] for line in split.file.lines[split.rows]]
        expected = tokenizer(rows, truncation=True, max_length=6)["input_ids"]
        cached = [
            ids[:n]
            for b in split.batches(4)
            for ids, n in zip(b.input_ids.tolist(), b.lengths.tolist())
        ]
        assert cached == expected  # [CLS] ... [SEP], cut by the tokenizer, [SEP] kept
        batch = featurizer(rows)
        predicted = [ids[:n] for ids, n in zip(batch.input_ids.tolist(), batch.lengths.tolist())]
        assert predicted == expected
        # Past each title's length, the tokenizer's own [PAD] (the model masks it out).
        beyond = torch.arange(batch.input_ids.shape[1]) >= batch.lengths.unsqueeze(1)
        assert (batch.input_ids[beyond] == tokenizer.pad_token_id).all()
        padded += int(beyond.sum())
    assert padded > 0  # titles of other lengths than the longest were there to pad


def test_the_family_builds_forwards_overfits_and_reloads(tmp_path, tiny_bert):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=10)
    cfg = transformer_config(
        tmp_path, tiny_bert, **{"training.epochs": 25, "training.patience": None}
    )
    featurizer = make_featurizer(cfg)
    splits = load_splits(cfg.data, data, data, data, featurizer=featurizer)
    result = train(cfg, splits, tmp_path / "model")
    assert result.init_report["pretrained.missing_weights"] == 0
    assert result.test.accuracy >= 0.95  # memorised (the same rows)

    model = result.model.cpu().eval()
    batch = featurizer(["placa sonido usb", "disco freno", "bolso"])
    logits = model(batch)
    wider = torch.nn.functional.pad(batch.input_ids, (0, 3), value=featurizer.pad_id)
    torch.testing.assert_close(model(wider, batch.lengths), logits)  # padding is invisible

    clf = Classifier.load(tmp_path / "model")
    assert (tmp_path / "model" / "transformer" / "config.json").is_file()
    titles = ["placa sonido usb", "disco freno", "bolso"]
    np.testing.assert_allclose(
        clf.predict_proba(titles), torch.softmax(logits, 1).detach().numpy(), atol=1e-6
    )


def test_a_killed_transformer_run_resumes_to_the_same_weights(tmp_path, tiny_bert):
    from tests.test_training import InterruptAtEpoch

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=8)
    cfg = transformer_config(
        tmp_path,
        tiny_bert,
        **{"training.epochs": 3, "training.patience": None, "training.gradient_accumulation": 2},
    )
    featurizer = make_featurizer(cfg)
    splits = load_splits(cfg.data, data, featurizer=featurizer)
    train(cfg, splits, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, splits, tmp_path / "killed", [InterruptAtEpoch(2)])
    train(cfg, splits, tmp_path / "killed", resume=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


def test_the_course_bert_classifier_runs(tmp_path, tiny_bert, monkeypatch, run_cli):
    from tests.test_course_cli import CATEGORIES  # noqa: F401

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))
    command = (
        f"train --train-data {data} --classifier BERT --bert-model {tiny_bert} --epochs 2 "
        "--hidden-layers 8 --dropout 0.1 --no-track --output run -q"
    )
    code, out, err = run_cli(shlex.split(command))
    assert code == 0, err
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "family: transformer" in config and "hidden_layers:\n  - 8" in config
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 2
