"""Property-based tests (hypothesis) of the way a title becomes model input: the tokenizer,
the vocabulary, the featurizer's padding and the batches. Any Unicode text is handled
(control characters, NUL, unassigned code points, combining marks, right-to-left scripts),
lengths and padding are right, and a title gets the same ids in a batch as alone.

Lone surrogates are not text (no UTF-8 encoding exists for them) and are left out, as
hypothesis's `text()` leaves them out; the HTTP API refuses them (tests/test_serving.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prodcat.config import TokenizerConfig
from prodcat.data.batches import batch_order, bucket_by_length, iterate_batches
from prodcat.data.featurizers import VocabularyFeaturizer
from prodcat.data.text import positions_in_rows, tokenize, tokenize_to_lists
from prodcat.data.vocab import PAD, UNK, Vocabulary

# Modest budgets: the whole file runs in a few seconds on a loaded CPU.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text; a share of it made of what titles are made of (words, digits, separators), so
# that examples carry tokens often rather than only exotic code points.
WORDY = st.text(alphabet=st.sampled_from(list("abcXYZ ñéü 0129-/.,®")), max_size=30)
TITLE = st.one_of(st.text(max_size=40), WORDY)
TITLES = st.lists(TITLE, max_size=12)

TOKENIZERS = st.builds(
    TokenizerConfig,
    lowercase=st.booleans(),
    strip_accents=st.booleans(),
    numbers=st.sampled_from(["shape", "keep", "drop", "strip"]),
    min_token_length=st.integers(1, 3),
    separator=st.sampled_from(["letters", "punctuation"]),
    stop_words=st.sampled_from(["none", "spanish", "portuguese"]),
)


# --- tokenizer -----------------------------------------------------------------------


@FAST
@given(titles=TITLES, cfg=TOKENIZERS)
def test_any_text_tokenizes_to_one_token_list_per_title(titles, cfg):
    chunk = tokenize(titles, cfg)
    assert chunk.n_rows == len(titles)
    assert len(chunk.codes) == len(chunk.row)
    assert np.all(np.diff(chunk.row) >= 0)  # listed title by title
    assert np.all((chunk.codes >= 0) & (chunk.codes < max(len(chunk.vocabulary), 1)))
    assert chunk.lengths().sum() == len(chunk.codes)
    assert len(set(chunk.vocabulary)) == len(chunk.vocabulary)  # distinct names
    for token in tokenize_to_lists(titles, cfg):
        assert all(len(t) >= cfg.min_token_length for t in token)


@FAST
@given(titles=TITLES, cfg=TOKENIZERS)
def test_a_title_has_the_same_tokens_in_a_batch_as_alone(titles, cfg):
    together = tokenize_to_lists(titles, cfg)
    assert together == [tokenize_to_lists([t], cfg)[0] for t in titles]


@FAST
@given(titles=st.lists(st.one_of(st.none(), TITLE), max_size=8))
def test_null_titles_are_empty_titles(titles):
    cfg = TokenizerConfig()
    got = tokenize_to_lists(pa.array(titles, type=pa.string()), cfg)
    want = tokenize_to_lists(["" if t is None else t for t in titles], cfg)
    assert got == want
    assert all(tokens == [] for t, tokens in zip(titles, got) if t is None)


@FAST
@given(title=st.text(alphabet=st.characters(max_codepoint=0x24F), max_size=40))
def test_default_tokens_of_latin_text_have_no_marks_and_no_digit_but_zero(title):
    # Latin letters only: newer code points may be marks in one Unicode version, not another.
    import unicodedata

    for token in tokenize_to_lists([title], TokenizerConfig())[0]:
        assert token == token.lower()
        assert not any(unicodedata.category(c).startswith("M") for c in token)
        assert not any(c in "123456789" for c in token)


@FAST
@given(row=st.lists(st.integers(0, 5), max_size=30).map(sorted))
def test_positions_count_from_zero_inside_each_row(row):
    row = np.asarray(row, dtype=np.int64)
    pos = positions_in_rows(row, 6)
    for r in range(6):
        assert pos[row == r].tolist() == list(range(int((row == r).sum())))


# --- vocabulary ------------------------------------------------------------------------

NAMES = st.lists(st.text(min_size=1, max_size=8).filter(lambda s: "\n" not in s), unique=True)


@FAST
@given(
    names=NAMES,
    data=st.data(),
    min_count=st.integers(1, 4),
    max_size=st.one_of(st.none(), st.integers(3, 12)),
)
def test_vocabulary_keeps_frequent_tokens_and_remaps_the_rest_to_unk(
    names, data, min_count, max_size
):
    names = [PAD, UNK, *(n for n in names if n not in (PAD, UNK))]
    counts = np.asarray(
        data.draw(st.lists(st.integers(0, 9), min_size=len(names), max_size=len(names)))
    )
    vocab, remap = Vocabulary.from_counts(names, counts, min_count, max_size)
    assert vocab.tokens[:2] == [PAD, UNK]
    assert len(set(vocab.tokens)) == len(vocab)
    if max_size is not None:
        assert len(vocab) <= max_size
    assert remap[0] == 0
    for name, count, new in zip(names[2:], counts[2:], remap[2:]):
        if new == 1:  # dropped: rare, or cut by max_size after rarer... never more frequent
            assert count < min_count or max_size is not None
        else:
            assert vocab.tokens[new] == name and count >= min_count
    kept = counts[2:][remap[2:] > 1]
    dropped = counts[2:][(remap[2:] == 1) & (counts[2:] >= min_count)]
    assert not len(kept) or not len(dropped) or kept.min() >= dropped.max()
    assert vocab.remap_from(vocab.tokens).tolist() == list(range(len(vocab)))


@FAST
@given(titles=TITLES)
def test_a_vocabulary_of_real_tokens_survives_its_file(tmp_path_factory, titles):
    tokens = sorted({t for ts in tokenize_to_lists(titles, TokenizerConfig()) for t in ts})
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    Vocabulary([PAD, UNK, *tokens]).save(path)
    assert Vocabulary.load(path).tokens == [PAD, UNK, *tokens]


# --- featurizer: encode and padding -------------------------------------------------------


def fitted(titles: list[str], max_tokens: int) -> VocabularyFeaturizer:
    """A featurizer whose vocabulary is the tokens of `titles`' even-numbered titles."""
    cfg = TokenizerConfig()
    seen = sorted({t for ts in tokenize_to_lists(titles[::2], cfg) for t in ts})
    return VocabularyFeaturizer.from_tokens(seen, tokenizer=cfg, max_tokens=max_tokens)


@FAST
@given(titles=TITLES, max_tokens=st.integers(1, 6))
def test_encode_pads_with_zero_after_each_length_and_cuts_at_max_tokens(titles, max_tokens):
    featurizer = fitted(titles, max_tokens)
    ids, lengths = featurizer.encode(titles)
    true_lengths = [len(t) for t in tokenize_to_lists(titles, featurizer.tokenizer)]
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.shape == (len(titles), max(min(max(true_lengths, default=0), max_tokens), 1))
    assert lengths.tolist() == [min(n, max_tokens) for n in true_lengths]
    for row, n in zip(ids, lengths):
        assert np.all(row[n:] == featurizer.pad_id)
        assert np.all(row[:n] != featurizer.pad_id)  # a real token is never padding
        assert np.all(row < featurizer.vocab_size)


@FAST
@given(titles=TITLES, max_tokens=st.integers(1, 6))
def test_a_title_gets_the_same_ids_in_a_batch_as_alone(titles, max_tokens):
    featurizer = fitted(titles, max_tokens)
    ids, lengths = featurizer.encode(titles)
    for i, title in enumerate(titles):
        alone, length = featurizer.encode([title])
        assert length[0] == lengths[i]
        assert alone[0, : length[0]].tolist() == ids[i, : lengths[i]].tolist()


@FAST
@given(titles=TITLES)
def test_seen_tokens_are_never_unknown_and_unseen_ones_are(titles):
    featurizer = fitted(titles, max_tokens=64)
    known = set(featurizer.vocabulary.tokens)
    ids, lengths = featurizer.encode(titles)
    for tokens, row, n in zip(tokenize_to_lists(titles, featurizer.tokenizer), ids, lengths):
        assert [featurizer.vocabulary.tokens[i] if i != 1 else None for i in row[:n]] == [
            t if t in known else None for t in tokens
        ]


@FAST
@given(titles=st.lists(TITLE, min_size=1, max_size=6))
def test_the_batch_of_raw_titles_is_what_encode_gives(titles):
    featurizer = fitted(titles, max_tokens=8)
    batch = featurizer(titles)
    ids, lengths = featurizer.encode(titles)
    assert batch.input_ids.tolist() == ids.tolist()
    assert batch.lengths.tolist() == lengths.tolist()
    assert len(batch) == len(titles)


# --- batches -----------------------------------------------------------------------------


@st.composite
def caches(draw):
    """A cache-like token matrix (rows, width) padded with 0, its lengths, and a remap."""
    n, width, pieces = draw(st.integers(1, 40)), draw(st.integers(1, 6)), draw(st.integers(2, 9))
    lengths = np.asarray(draw(st.lists(st.integers(0, width), min_size=n, max_size=n)))
    tokens = np.zeros((n, width), dtype=np.int32)
    for i, length in enumerate(lengths.tolist()):
        tokens[i, :length] = draw(
            st.lists(st.integers(1, pieces - 1), min_size=length, max_size=length)
        )
    remap = np.asarray(
        [0] + draw(st.lists(st.integers(1, 50), min_size=pieces - 1, max_size=pieces - 1))
    )
    return tokens, lengths, remap


@FAST
@given(
    cache=caches(),
    batch_size=st.integers(1, 9),
    shuffle=st.booleans(),
    seed=st.integers(0, 3),
    start=st.integers(0, 3),
)
def test_batches_visit_every_row_once_cut_to_their_longest_title(
    cache, batch_size, shuffle, seed, start
):
    tokens, lengths, remap = cache
    rows = np.arange(len(tokens))[::-1].copy()  # a split need not list rows in file order
    labels = np.arange(len(rows), dtype=np.int64)  # label = position in the split
    order = batch_order(len(rows), shuffle=shuffle, seed=seed, epoch=1)
    batches = list(
        iterate_batches(
            tokens, lengths, rows, remap=remap, labels=labels, batch_size=batch_size, order=order
        )
    )
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    seen = np.concatenate([b.labels.numpy() for b in batches])
    assert sorted(seen.tolist()) == list(range(len(rows)))
    for batch in batches:
        where = rows[batch.labels.numpy()]
        assert batch.lengths.tolist() == lengths[where].tolist()
        assert batch.input_ids.shape[1] == max(int(lengths[where].max()), 1)
        for ids, row, n in zip(batch.input_ids.numpy(), where, lengths[where]):
            assert ids[:n].tolist() == remap[tokens[row, :n]].tolist()
            assert np.all(ids[:n] > 0) and np.all(ids[n:] == 0)
    # From batch `start` on, a resumed epoch gets exactly the batches it had left.
    resumed = iterate_batches(
        tokens,
        lengths,
        rows,
        remap=remap,
        labels=labels,
        batch_size=batch_size,
        order=order,
        start=start,
    )
    assert [b.labels.tolist() for b in resumed] == [b.labels.tolist() for b in batches[start:]]


@FAST
@given(
    n=st.integers(0, 300),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 5),
    buffer=st.one_of(st.none(), st.integers(1, 50)),
)
def test_the_epoch_order_is_a_permutation_fixed_by_seed_and_epoch(n, seed, epoch, buffer):
    order = batch_order(n, shuffle=True, seed=seed, epoch=epoch, buffer=buffer)
    assert sorted(order.tolist()) == list(range(n))
    again = batch_order(n, shuffle=True, seed=seed, epoch=epoch, buffer=buffer)
    assert order.tolist() == again.tolist()


@FAST
@given(
    lengths=st.lists(st.integers(0, 32), max_size=300),
    batch_size=st.integers(1, 8),
    seed=st.integers(0, 3),
)
def test_length_buckets_rearrange_the_order_without_losing_rows(lengths, batch_size, seed):
    order = batch_order(len(lengths), shuffle=True, seed=seed, epoch=2)
    lengths = np.asarray(lengths, dtype=np.int64)
    bucketed = bucket_by_length(order, lengths[order], batch_size, seed=seed, epoch=2)
    assert sorted(bucketed.tolist()) == list(range(len(lengths)))


@pytest.mark.parametrize("separator", ["letters", "punctuation"])
def test_separators_alone_give_no_tokens(separator):
    cfg = TokenizerConfig(separator=separator)
    assert tokenize_to_lists([" \t\n\r\x0b\x0c\x1c\x85\u2028\u3000!?.,;:-"], cfg) == [[]]
