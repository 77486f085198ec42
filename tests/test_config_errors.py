"""A corpus of config and `--set` mistakes, each run through `prodcat train`: every one is
refused before any data is read with exit code 2 and one line on stderr that names the key
(or the file and line), never a traceback."""

from __future__ import annotations

import pytest

# --set overrides -> what the one line must name
BAD_OVERRIDES = {
    "unknown key": (["training.lrr=0.1"], "training.lrr: Extra inputs are not permitted"),
    "unknown section": (["trainig.lr=0.1"], "trainig: Extra inputs are not permitted"),
    "unknown nested key": (["data.tokenizer.lower=true"], "data.tokenizer.lower: Extra"),
    "key of another family": (
        ["model.hidden_size=64"],
        "model.hidden_size: not a setting of the mlp family",
    ),
    "word setting on a transformer": (
        ["model.family=transformer", "model.pretrained=minilm", "model.embedding_dim=64"],
        "model.embedding_dim: not a setting of the transformer family",
    ),
    "text for a number": (["training.lr=fast"], "training.lr: Input should be a valid number"),
    "text for an integer": (["training.epochs=ten"], "training.epochs: Input should be"),
    "float for an integer": (["training.epochs=2.5"], "training.epochs: Input should be"),
    "text for a boolean": (["training.progress=maybe"], "training.progress: Input should be"),
    "number for a list": (["model.hidden_layers=64"], "model.hidden_layers: Input should be"),
    "text in a list": (["model.hidden_layers=[64, big]"], "model.hidden_layers.1: Input"),
    "list for a mapping": (["tracking.tags=[a, b]"], "tracking.tags: Input should be"),
    "value for a section": (["training=3"], "training: Input should be a valid dictionary"),
    "key under a value": (["training.epochs.max=3"], "training.epochs: Input should be"),
    "negative learning rate": (["training.lr=-0.01"], "training.lr: Input should be greater"),
    "zero learning rate": (["training.lr=0"], "training.lr: Input should be greater than 0"),
    "infinite learning rate": (["training.lr=.inf"], "training.lr: Input should be a finite"),
    "NaN learning rate": (["training.lr=.nan"], "training.lr: Input should be a finite"),
    "zero batch size": (["training.batch_size=0"], "training.batch_size"),  # int or "auto"
    "negative epochs": (["training.epochs=-1"], "training.epochs: Input should be greater"),
    "dropout of 1": (["model.dropout=1"], "model.dropout: Input should be less than 1"),
    "dropout above 1": (["model.dropout=1.5"], "model.dropout: Input should be less than 1"),
    "negative dropout": (["model.dropout=-0.1"], "model.dropout: Input should be greater"),
    "smoothing of 1": (["training.label_smoothing=1"], "training.label_smoothing: Input"),
    "zero embedding": (["model.embedding_dim=0"], "model.embedding_dim: Input should be"),
    "no filter widths": (
        ["model.family=cnn", "model.filters_length=[]"],
        "model.filters_length: List should have at least 1 item",
    ),
    "unknown family": (["model.family=bert"], "model.family: unknown model family 'bert'"),
    "list as family": (["model.family=[mlp]"], "model.family: unknown model family"),
    "unknown choice": (["training.optimizer=sgd"], "training.optimizer: Input should be 'adam'"),
    "unknown device": (["training.device=tpu"], "training.device: Input should be"),
    "huge max_tokens": (["data.max_tokens=100000"], "data.max_tokens: Input should be less"),
    "frozen random vectors": (["model.freeze_embeddings=true"], "model: Value error"),
    "full rank with a hidden layer": (
        ["model.family=linear", "model.full_rank=true", "model.hidden_layers=[64]"],
        "model: Value error, full_rank scores categories straight from the bag",
    ),
    "smoothing a hinge": (
        ["training.loss=squared_hinge", "training.label_smoothing=0.1"],
        "training: Value error, label_smoothing smooths cross-entropy",
    ),
    "unknown loss": (["training.loss=hinge"], "training.loss: Input should be 'cross_entropy'"),
    "no '='": (["training.epochs"], "--set expects KEY=VALUE, got 'training.epochs'"),
    "no key": (["=3"], "--set expects KEY=VALUE, got '=3'"),
    "through a value": (["training.epochs=2", "training.epochs.x=1"], "'epochs' is not a sect"),
}

# config file content -> what the one line must name after "error: PATH"
BAD_FILES = {
    "typo.yaml": (b"trainig:\n  epochs: 2\n", ": invalid config: trainig: Extra inputs"),
    "wrong-type.yaml": (b"training:\n  epochs: two\n", ": invalid config: training.epochs: "),
    "negative-lr.yaml": (b"training:\n  lr: -1\n", ": invalid config: training.lr: Input should"),
    "family.yaml": (b"model:\n  family: svm\n", "model.family: unknown model family 'svm'"),
    "syntax.yaml": (b"training:\n  lr: [0.1\n", ":3: invalid YAML: expected ',' or ']'"),
    "indent.yaml": (b"a: 1\n  b: 2\n", ":2: invalid YAML: mapping values are not allowed"),
    "tab.yaml": (b"\t- x\n", ":1: invalid YAML: found character '\\t' that cannot start"),
    "list.yaml": (b"- training\n- model\n", ": a config must be a mapping of sections"),
    "scalar.yaml": (b"just words\n", ": a config must be a mapping of sections"),
    "latin1.yaml": ("training:\n  run: café\n".encode("latin-1"), ": not UTF-8 text (byte 0xe9)"),
    "section-list.yaml": (b"training:\n  - epochs\n", ": invalid config: training: Input should"),
}


@pytest.fixture
def train_cli(run_cli, tmp_path, monkeypatch):
    """`prodcat train` with the given options, in a folder of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))

    def train(*options: str):
        return run_cli(["train", "--no-track", "-q", "--output", str(tmp_path / "run"), *options])

    return train


def assert_one_line(result, *parts: str) -> None:
    code, out, err = result
    assert code == 2, err
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0]


@pytest.mark.parametrize("case", list(BAD_OVERRIDES))
def test_a_bad_override_is_one_line_naming_the_key(case, train_cli, tmp_path):
    overrides, expected = BAD_OVERRIDES[case]
    assert_one_line(train_cli(*(x for o in overrides for x in ("--set", o))), expected)
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_config_file_is_one_line_naming_file_and_key(name, train_cli, tmp_path):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    assert_one_line(train_cli("--config", str(path)), f"error: {path}", expected)


def test_a_missing_config_and_a_folder_for_one(train_cli, tmp_path):
    assert_one_line(
        train_cli("--config", str(tmp_path / "nope.yaml")), f"{tmp_path}/nope.yaml: no such"
    )
    assert_one_line(train_cli("--config", str(tmp_path)), f"{tmp_path}: a folder, not a config")


def test_an_override_wins_over_the_file_and_is_checked_as_strictly(train_cli, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("training:\n  epochs: 2\n", encoding="utf-8")
    assert_one_line(
        train_cli("--config", str(path), "--set", "training.epochs=0"), "training.epochs: Input"
    )
