"""Pretrained word vectors: both file formats, both alignments, coverage, freezing, and
`prodcat vectors train`."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from prodcat.config import TokenizerConfig, build_config
from prodcat.data.dataset import load_splits
from prodcat.data.vectors import fill_missing, read_vectors
from prodcat.errors import ConfigError, DataError
from prodcat.training.loop import train
from tests.test_training import small_config, write_titles

VECTORS = {
    "Camión": [1.0, 0.0, 0.0, 0.0],
    "camion": [9.0, 9.0, 9.0, 9.0],  # a later spelling of the same normalised word: ignored
    "placa": [0.0, 1.0, 0.0, 0.0],
    "sonido": [0.0, 0.0, 1.0, 0.0],
    "ausente": [0.0, 0.0, 0.0, 1.0],
}
TOKENS = ["[PAD]", "[UNK]", "camion", "placa", "sonido", "bolso"]


def vector_text(header: bool, vectors=VECTORS) -> str:
    lines = [f"{len(vectors)} 4"] if header else []
    lines += [w + " " + " ".join(f"{x:g}" for x in v) for w, v in vectors.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "name, header, gz",
    [("v.txt", True, False), ("v.vec", False, False), ("v.txt.gz", True, True)],
)
def test_text_vectors_align_to_a_folding_vocabulary(tmp_path, name, header, gz):
    data = vector_text(header).encode()
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    rows = read_vectors(tmp_path / name, TOKENS, TokenizerConfig())
    assert rows.dim == 4 and rows.words_in_file == 5
    assert rows.found.tolist() == [False, False, True, True, True, False]
    np.testing.assert_array_equal(rows.vectors[2], VECTORS["Camión"])  # first spelling wins
    np.testing.assert_array_equal(rows.vectors[5], np.zeros(4))
    counts = np.array([0, 0, 5, 3, 1, 1])
    coverage = rows.coverage(counts)
    assert coverage["vocabulary_coverage"] == pytest.approx(3 / 4)
    assert coverage["occurrence_coverage"] == pytest.approx(9 / 10)


def test_word2vec_binary_vectors(tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(list(VECTORS), np.array(list(VECTORS.values()), dtype=np.float32))
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    rows = read_vectors(tmp_path / "v.bin", TOKENS, TokenizerConfig())
    assert rows.found.tolist() == [False, False, True, True, True, False]
    np.testing.assert_array_equal(rows.vectors[3], VECTORS["placa"])


def test_course_vocabulary_keeps_accents(tmp_path):
    (tmp_path / "v.txt").write_text(vector_text(True), encoding="utf-8")
    tokens = ["[PAD]", "[UNK]", "camión", "camion"]
    rows = read_vectors(tmp_path / "v.txt", tokens, TokenizerConfig.course())
    np.testing.assert_array_equal(rows.vectors[2], VECTORS["Camión"])
    np.testing.assert_array_equal(rows.vectors[3], VECTORS["camion"])


def test_missing_rows_start_at_the_found_rows_scale():
    rng = np.random.default_rng(0)
    found = rng.normal(0.5, 2.0, size=(2000, 8)).astype(np.float32)
    vectors = np.concatenate([np.zeros((2000, 8), np.float32), found])
    from prodcat.data.vectors import PretrainedRows

    rows = PretrainedRows(vectors, np.r_[np.zeros(2000, bool), np.ones(2000, bool)], 2000)
    filled = fill_missing(rows)
    assert not filled[0].any()  # [PAD]
    drawn = filled[1:2000]
    assert abs(drawn.mean() - 0.5) < 0.1 and abs(drawn.std() - 2.0) < 0.1
    np.testing.assert_array_equal(filled[2000:], found)


def test_a_bad_vectors_file_names_its_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("2 3\nplaca 1 2 3\nsonido 1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"v.txt:3: expected 3 numbers after the word, found 2"):
        read_vectors(path, TOKENS, TokenizerConfig())


def test_freezing_without_vectors_is_a_config_error():
    with pytest.raises(ConfigError, match="freeze_embeddings needs pretrained_embeddings"):
        build_config(overrides={"model.freeze_embeddings": True})


def test_a_model_starts_from_the_vectors_and_keeps_them_frozen(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=20)
    words = "placa sonido audio interfaz usb lavarropas lavar maquina".split()
    rng = np.random.default_rng(1)
    vectors = {w: rng.normal(size=16).round(3).tolist() for w in words}
    (tmp_path / "v.txt").write_text(
        "\n".join(w + " " + " ".join(map(str, v)) for w, v in vectors.items()) + "\n"
    )
    overrides = {"model.pretrained_embeddings": str(tmp_path / "v.txt"), "training.epochs": 2}
    cfg = small_config(tmp_path, **overrides, **{"model.freeze_embeddings": True})
    splits = load_splits(cfg.data, data)
    result = train(cfg, splits, tmp_path / "model")

    table = result.model.embedder.tokens.weight
    assert not table.requires_grad
    vocab = splits.vocabulary.index
    for word, vector in vectors.items():
        torch.testing.assert_close(table[vocab[word]], torch.tensor(vector), rtol=0, atol=1e-6)
    report = result.init_report
    found = len(vectors) / (len(splits.vocabulary) - 2)
    assert report["pretrained.vocabulary_coverage"] == pytest.approx(found)
    assert 0 < report["pretrained.occurrence_coverage"] <= 1

    wrong = small_config(tmp_path, **{**overrides, "model.embedding_dim": 8})
    with pytest.raises(ConfigError, match="vectors of 16 dimensions, but model.embedding_dim is 8"):
        train(wrong, splits, tmp_path / "other")


@pytest.mark.parametrize("algorithm", ["word2vec", "fasttext"])
def test_prodcat_vectors_train_writes_a_readable_file(tmp_path, run_cli, algorithm):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    output = tmp_path / "vectors.txt.gz"
    code, out, err = run_cli(
        ["vectors", "train", "-i", str(data), "-o", str(output), "--dim", "12"]
        + ["--algorithm", algorithm, "--min-count", "1", "-q"]
    )
    assert code == 0, err
    assert "x 12 from 120 titles" in out
    with gzip.open(output, "rt", encoding="utf-8") as f:
        words, dim = map(int, f.readline().split())
    assert dim == 12 and words >= 25
    rows = read_vectors(output, ["[PAD]", "[UNK]", "placa", "pañalero"], TokenizerConfig())
    assert rows.found.tolist() == [False, False, True, False]  # accents folded: "panalero"
