"""Tokenizer, vocabulary and label map, and the course's pre-tokenised format."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pyarrow as pa
import pytest

from prodcat.config import DataConfig, TokenizerConfig
from prodcat.data.cache import encode_file
from prodcat.data.dataset import load_splits
from prodcat.data.stop_words import PORTUGUESE
from prodcat.data.text import tokenize, tokenize_to_lists
from prodcat.data.vocab import LabelMap, Vocabulary

pytestmark = pytest.mark.usefixtures("isolated_cache")

WASHER = "Hidrolavadora Lavor One 120 Bar 1700w"


def tokens(title: str, **settings) -> list[str]:
    return tokenize_to_lists([title], TokenizerConfig(**settings))[0]


# --- tokenizer -----------------------------------------------------------------------


def test_default_tokens_shape_numbers():
    assert tokens(WASHER) == ["hidrolavadora", "lavor", "one", "000", "bar", "0000w"]


def test_numbers_keep_and_drop():
    assert tokens(WASHER, numbers="keep") == [
        "hidrolavadora",
        "lavor",
        "one",
        "120",
        "bar",
        "1700w",
    ]
    # Only tokens made of digits go; "1700w" carries a unit and stays.
    assert tokens(WASHER, numbers="drop") == ["hidrolavadora", "lavor", "one", "bar", "1700w"]
    assert tokens("Maquina De Lavar Electrolux 12 Kilos", numbers="shape")[-2:] == ["00", "kilos"]
    assert tokens("Maquina De Lavar Electrolux 12 Kilos", numbers="drop")[-1] == "kilos"


def test_accents_stripped_by_default_and_kept_on_request():
    title = "Cafetera Eléctrica Bebé Ñandú Maçã Pão"
    assert tokens(title, strip_accents=False) == [
        "cafetera",
        "eléctrica",
        "bebé",
        "ñandú",
        "maçã",
        "pão",
    ]
    assert tokens(title) == [
        "cafetera",
        "electrica",
        "bebe",
        "nandu",
        "maca",
        "pao",
    ]
    # A decomposed accent (e + combining acute) stays inside the token, and is stripped too.
    assert tokens("Bebe\u0301", strip_accents=True) == ["bebe"]
    assert tokens("Bebe\u0301", strip_accents=False) == ["bebe\u0301"]


def test_punctuation_symbols_and_emoji_separate_tokens():
    title = 'Mochila, Bolso "Bebé"/Cuero Marietastore® 😀Wi-Fi (2un.)'
    assert tokens(title) == ["mochila", "bolso", "bebe", "cuero", "marietastore", "wi", "fi", "0un"]


def test_lowercase_and_min_token_length():
    assert tokens("Set De Brochas", lowercase=False) == ["Set", "De", "Brochas"]
    assert tokens("Set De Brochas X", min_token_length=3) == ["set", "brochas"]


def test_empty_and_null_titles_have_no_tokens():
    chunk = tokenize(pa.array(["", None, "  ,, ", "Foo"]), TokenizerConfig())
    assert chunk.n_rows == 4
    assert chunk.lengths().tolist() == [0, 0, 0, 1]


def test_tokens_that_normalise_alike_share_one_code():
    chunk = tokenize(["Bar BAR bar", "bar Baz"], TokenizerConfig())
    used = sorted({chunk.vocabulary[c] for c in chunk.codes.tolist()})
    assert used == ["bar", "baz"]
    assert chunk.row.tolist() == [0, 0, 0, 1, 1]
    assert chunk.positions().tolist() == [0, 1, 2, 0, 1]
    assert len(set(chunk.codes[:4].tolist())) == 1


def test_tokenizer_config_rejects_unknown_keys():
    with pytest.raises(ValueError):
        TokenizerConfig(strip_accent=True)
    with pytest.raises(ValueError):
        TokenizerConfig(numbers="round")


def test_cache_vocabulary_holds_only_tokens_that_occur(write_csv, data_config):
    rows = [("Mochila, Bolso 120 ®", "A"), ("Set De Brochas 6", "B")]
    path = write_csv("rows.csv", ["title", "category"], rows)
    file = encode_file(
        path, data_config(tokenizer=TokenizerConfig(numbers="drop", min_token_length=3))
    )
    assert file.vocabulary == ["[PAD]", "[UNK]", "mochila", "bolso", "set", "brochas"]
    assert file.token_counts[2:].min() >= 1


# --- vocabulary and labels -----------------------------------------------------------


def test_vocabulary_from_counts_min_count_and_max_size():
    names = ["[PAD]", "[UNK]", "a", "b", "c", "d", "e"]
    counts = np.array([0, 0, 5, 1, 3, 3, 2])

    vocab, remap = Vocabulary.from_counts(names, counts, min_count=2)
    assert vocab.tokens == ["[PAD]", "[UNK]", "a", "c", "d", "e"]
    assert remap.tolist() == [0, 1, 2, 1, 3, 4, 5]

    vocab, remap = Vocabulary.from_counts(names, counts, min_count=1, max_size=4)
    assert vocab.tokens == ["[PAD]", "[UNK]", "a", "c"]
    assert len(vocab) == 4
    assert remap.tolist() == [0, 1, 2, 1, 3, 1, 1]


def test_vocabulary_must_start_with_pad_and_unk():
    with pytest.raises(ValueError):
        Vocabulary(["a", "[PAD]", "[UNK]"])


def test_vocabulary_remap_from_other_names():
    vocab = Vocabulary(["[PAD]", "[UNK]", "bolso", "mochila"])
    assert vocab.remap_from(["[PAD]", "[UNK]", "mochila", "otro", "bolso"]).tolist() == [
        0,
        1,
        3,
        1,
        2,
    ]
    assert vocab.remap_from(["mochila", "bolso"]).tolist() == [3, 2]


def test_vocabulary_and_label_map_round_trip(tmp_path):
    vocab = Vocabulary(["[PAD]", "[UNK]", "bebé", "0000w", "marietastore"])
    vocab.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text(
        encoding="utf-8"
    ) == "[PAD]\n[UNK]\nbebé\n0000w\nmarietastore\n"
    assert Vocabulary.load(tmp_path / "vocab.txt").tokens == vocab.tokens

    labels = LabelMap(["DIAPER_BAGS", "WINE_CELLARS"])
    labels.save(tmp_path / "labels.txt")
    loaded = LabelMap.load(tmp_path / "labels.txt")
    assert loaded.names == ["DIAPER_BAGS", "WINE_CELLARS"]
    assert loaded.index == {"DIAPER_BAGS": 0, "WINE_CELLARS": 1}


def test_portuguese_titles_lose_nltks_portuguese_stop_words(shared_file):
    """The course cut each language's titles with that language's NLTK stop words: on the
    Portuguese rows of meli-es-pt-1k (the file has no language column: rows with "com", the
    Portuguese "with"), the Portuguese list drops them all; the Spanish one left many in."""
    with open(shared_file("meli-es-pt-1k.csv"), encoding="utf-8") as f:
        titles = [row["title"] for row in csv.DictReader(f)]
    portuguese = [t for t in titles if re.search(r"\bcom\b", t, re.IGNORECASE)]
    assert len(portuguese) >= 40
    pt = tokenize_to_lists(portuguese, TokenizerConfig.course("portuguese"))
    es = tokenize_to_lists(portuguese, TokenizerConfig.course("spanish"))
    assert not {token for tokens in pt for token in tokens} & PORTUGUESE
    left_by_spanish = {token for tokens in es for token in tokens} & PORTUGUESE
    assert {"com", "sem", "até"} <= left_by_spanish
    # A course line's --language picks the list its --token-to-index tokens were cut with.
    cfg = DataConfig(token_to_index="t.json.gz", language="portuguese")
    assert cfg.tokenizer == TokenizerConfig.course("portuguese")
    assert DataConfig(token_to_index="t.json.gz").tokenizer.stop_words == "spanish"


@pytest.fixture
def counted_files(write_csv):
    """Training titles with known token counts, and a validation file with a new token."""
    rows = (
        [("mochila bolso cuero", "BAGS")] * 3  # mochila 3+1, bolso 3, cuero 3+2
        + [("mochila cuero rojo", "BAGS")]  # rojo 1
        + [("vino tinto cuero", "WINE")] * 2  # vino 2, tinto 2
        + [("vino blanco", "WINE")]  # vino +1 -> 3, blanco 1
    )
    train = write_csv("train.csv", ["title", "category"], rows)
    validation = write_csv(
        "validation.csv",
        ["title", "category"],
        [("mochila exclusivisima", "BAGS"), ("vino", "WINE")],
    )
    return train, validation


def test_vocabulary_counts_training_rows(counted_files, data_config):
    train, validation = counted_files
    splits = load_splits(data_config(test_size=0), train, validation)
    assert splits.vocabulary.tokens == [
        "[PAD]",
        "[UNK]",
        "cuero",
        "mochila",
        "bolso",
        "vino",
        "tinto",
        "rojo",
        "blanco",
    ]
    assert splits.summary.vocabulary == 9


def test_min_count_and_max_vocab_in_load_splits(counted_files, data_config):
    train, validation = counted_files
    splits = load_splits(data_config(test_size=0, min_count=3), train, validation)
    assert splits.vocabulary.tokens == ["[PAD]", "[UNK]", "cuero", "mochila", "bolso", "vino"]

    splits = load_splits(
        data_config(test_size=0, max_vocab=4, unknown_buckets=0), train, validation
    )
    assert splits.vocabulary.tokens == ["[PAD]", "[UNK]", "cuero", "mochila"]
    # Tokens outside the vocabulary become [UNK] in the batches.
    batch = next(splits.train.batches(1))
    assert batch.input_ids.tolist() == [[3, 1, 2]]
    # By default the words max_vocab drops (bolso, vino and 3 more) get a row each at most.
    splits = load_splits(data_config(test_size=0, max_vocab=4), train, validation)
    assert splits.featurizer.unknown_buckets == 5 and splits.featurizer.vocab_size == 9
    assert 1 not in next(splits.train.batches(1)).input_ids.tolist()[0]


def test_token_seen_only_in_validation_file_is_unknown(counted_files, data_config):
    train, validation = counted_files
    splits = load_splits(data_config(test_size=0), train, validation)
    vocab = splits.vocabulary
    assert "exclusivisima" not in vocab.index

    batch = next(splits.validation.batches(8))
    assert batch.input_ids.tolist() == [[vocab.index["mochila"], 1], [vocab.index["vino"], 0]]
    assert batch.lengths.tolist() == [2, 1]
    assert batch.labels.tolist() == [splits.labels.index["BAGS"], splits.labels.index["WINE"]]


def test_vocabulary_from_carved_training_rows_only(write_csv, data_config):
    # Each title has a token of its own, so the validation rows' own tokens are unknown.
    rows = [(f"comun unico{i:03d}", f"CAT_{i % 4}") for i in range(40)]
    path = write_csv("train.csv", ["title", "category"], rows)
    splits = load_splits(
        data_config(validation_size=8, test_size=4, tokenizer=TokenizerConfig(numbers="keep")), path
    )

    assert len(splits.vocabulary) == 2 + 1 + len(splits.train)
    held_out = set(splits.validation.rows.tolist()) | set(splits.test.rows.tolist())
    for i in held_out:
        assert f"unico{i:03d}" not in splits.vocabulary.index
    for split in (splits.validation, splits.test):
        ids = np.concatenate([b.input_ids.numpy() for b in split.batches(3)])
        assert ids[:, 0].tolist() == [splits.vocabulary.index["comun"]] * len(split)
        assert ids[:, 1].tolist() == [1] * len(split)
    train_ids = np.concatenate([b.input_ids.numpy() for b in splits.train.batches(7)])
    assert (train_ids[:, 1] > 2).all()


# --- the course's pre-tokenised format -----------------------------------------------


@pytest.fixture
def course_files(write_text, write_jsonl):
    index = {
        "[PAD]": 0,
        "[UNK]": 1,
        "mochilas": 2,
        "maternales": 3,
        "bolsos": 4,
        "bebe": 5,
        "cava": 6,
        "vino": 7,
        "heladera": 8,
    }
    index_path = write_text("token_to_index.json.gz", json.dumps(index), gz=True)
    records = [
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "Mochilas Maternales Bolsos Bebe",
            "category": "DIAPER_BAGS",
            "tokenized_title": ["mochilas", "maternales", "bolsos", "bebe"],
            "data": [2, 3, 4, 5],
            "target": 0,
            "n_labels": 2,
        },
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "Cava De Vino Vondom Heladera",
            "category": "WINE_CELLARS",
            "tokenized_title": ["cava", "vino", "vondom", "heladera"],
            "data": [6, 7, 1, 8],
            "target": 1,
            "n_labels": 2,
        },
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "Bolsos Bebe",
            "category": "DIAPER_BAGS",
            "tokenized_title": ["bolsos", "bebe"],
            "data": [4, 5],
            "target": 0,
            "n_labels": 2,
        },
        {
            "language": "spanish",
            "label_quality": "reliable",
            "title": "De La",
            "category": "WINE_CELLARS",
            "tokenized_title": [],
            "data": [],
            "target": 1,
            "n_labels": 2,
        },
    ]
    return index_path, write_jsonl("spanish.train.jsonl.gz", records, gz=True), records


def model_rows(split):
    """Each row's model ids, without padding, in the split's order."""
    rows = []
    for batch in split.batches(64):
        for ids, n in zip(batch.input_ids.tolist(), batch.lengths.tolist()):
            rows.append(ids[:n])
    return rows


def test_course_ids_come_from_the_titles_through_the_course_tokenizer(course_files, data_config):
    index_path, path, records = course_files
    cfg = data_config(token_to_index=index_path, validation_size=0, test_size=0)
    # A token_to_index file brings the course's tokenizer: accents kept, digits deleted,
    # tokens of 3+ characters, NLTK's Spanish stop words dropped.
    assert cfg.tokenizer == TokenizerConfig.course()
    splits = load_splits(cfg, path, validation=path)
    # The course's ids are the model's ids, and the titles give the `data` the course wrote.
    assert splits.vocabulary.tokens[:9] == [
        "[PAD]",
        "[UNK]",
        "mochilas",
        "maternales",
        "bolsos",
        "bebe",
        "cava",
        "vino",
        "heladera",
    ]
    assert model_rows(splits.train) == [r["data"] for r in records]
    assert splits.train.file.meta["stats"]["titles_without_tokens"] == 1


def test_course_ids_truncated_to_max_tokens(course_files, data_config):
    index_path, path, _ = course_files
    cfg = data_config(token_to_index=index_path, max_tokens=3, validation_size=0, test_size=0)
    splits = load_splits(cfg, path, validation=path)
    assert model_rows(splits.train) == [[2, 3, 4], [6, 7, 1], [4, 5], []]
    assert splits.train.file.meta["stats"]["truncated_titles"] == 2


def test_course_ids_cache_differs_from_own_tokenizer(course_files, data_config):
    index_path, path, _ = course_files
    course = encode_file(path, data_config(token_to_index=index_path))
    own = encode_file(path, data_config())
    assert course.folder != own.folder
    # prodcat's own tokenizer keeps the stop words the course removed.
    assert own.lengths.tolist() == [4, 5, 2, 2]
    assert course.lengths.tolist() == [4, 4, 2, 0]


def test_course_ids_through_load_splits(course_files, write_jsonl, data_config):
    index_path, path, _ = course_files
    # No `data` column needed: prodcat encodes the title.
    validation = write_jsonl(
        "spanish.validation.jsonl", [{"title": "Heladera, Maternales!", "category": "WINE_CELLARS"}]
    )
    splits = load_splits(data_config(token_to_index=index_path, test_size=0), path, validation)
    assert len(splits.vocabulary) == 9  # the whole token_to_index, with its ids
    batch = next(splits.validation.batches(1))
    assert batch.input_ids.tolist() == [[8, 3]]
