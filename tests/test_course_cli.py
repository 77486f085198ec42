"""The DiploDatos course's command lines work unchanged after `prodcat train`."""

from __future__ import annotations

import gzip
import json
import random
import shlex

import pytest
import yaml

from prodcat.cli.main import main

# The six command lines of ../shared/course-commands.md, verbatim after the program name.
COURSE = (
    "--train-data ./data/meli-challenge-2019/spanish.train.jsonl.gz "
    "--test-data ./data/meli-challenge-2019/spanish.test.jsonl.gz "
    "--token-to-index ./data/meli-challenge-2019/spanish_token_to_index.json.gz "
    "--pretrained-embeddings ./data/SBW-vectors-300-min5.txt.gz --language spanish  "
    "--validation-data ./data/meli-challenge-2019/spanish.validation.jsonl.gz "
    "--embeddings-size 300 "
)
COURSE_LINES = {
    "mlp-1": COURSE + "--hidden-layers 256 128 --dropout 0.3  --epochs 1 --train-max-size 50000 "
    "--validation-max-size 50000 --classifier MLP",
    "mlp-100": COURSE + "--hidden-layers 256 128 --dropout 0.3  --epochs 100 --classifier MLP",
    "cnn-1": COURSE + "--hidden-layers 256 128 --dropout 0.3  --epochs 1 --train-max-size 50000 "
    "--validation-max-size 50000  --random-buffer-size 4096 --cnn-filters-length 3 "
    "--classifier CNN",
    "cnn-100": COURSE + "--hidden-layers 256 128 --dropout 0.3  --epochs 100 "
    "--random-buffer-size 4096 --cnn-filters-length 3 --classifier CNN",
    "lstm-1": COURSE + "--lstm_hidden_size 64 --lstm_num_layers 1  --dropout 0.3  --epochs 1 "
    "--train-max-size 500000 --validation-max-size 500000 --classifier LSTM",
    "lstm-100": COURSE + "--lstm_hidden_size 64 --lstm_num_layers 1  --dropout 0.3  --epochs 100 "
    "--classifier LSTM",
}
CNN_COMMAND = "train " + COURSE_LINES["cnn-1"].replace("--pretrained-embeddings", "--x").replace(
    "--x ./data/SBW-vectors-300-min5.txt.gz ", ""
)
LSTM_COMMAND = "train " + COURSE_LINES["lstm-1"].replace(
    "--lstm_hidden_size 64 --lstm_num_layers 1", "{hidden} 64 {layers} 1"
)
WORDS = ["placa", "sonido", "lavar", "maquina", "freno", "disco", "bolso", "bebe", "cuero", "usb"]
CATEGORIES = ["SOUND_CARDS", "WASHING_MACHINES", "BRAKE_DISCS"]


@pytest.fixture
def course_data(tmp_path, monkeypatch):
    """The course's layout: split files with `data` token ids and a token_to_index file."""
    folder = tmp_path / "data" / "meli-challenge-2019"
    folder.mkdir(parents=True)
    index = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    with gzip.open(folder / "spanish_token_to_index.json.gz", "wt", encoding="utf-8") as f:
        json.dump(index, f)
    rng = random.Random(0)
    for split, n in (("train", 60), ("validation", 15), ("test", 15)):
        with gzip.open(folder / f"spanish.{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(n):
                target = i % len(CATEGORIES)
                words = WORDS[3 * target : 3 * target + 3] + [rng.choice(WORDS[9:])]
                row = {
                    "language": "spanish",
                    "label_quality": "reliable",
                    "title": " ".join(words).title(),
                    "category": CATEGORIES[target],
                    "tokenized_title": words,
                    "data": [index[w] for w in words],
                    "target": target,
                    "n_labels": len(CATEGORIES),
                }
                f.write(json.dumps(row) + "\n")
    from prodcat.config import DataConfig
    from prodcat.data.vectors import train_vectors

    # What a user would do here, where SBW cannot be downloaded: train vectors on the titles.
    train_vectors(
        folder / "spanish.train.jsonl.gz",
        tmp_path / "data" / "SBW-vectors-300-min5.txt.gz",
        DataConfig(tokenizer={"strip_accents": False}),
        dim=300,
        algorithm="word2vec",
        min_count=1,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PRODCAT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run(command: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(shlex.split(command) + ["--quiet"])
        raise SystemExit(0)
    return done.value.code


def only_run_folder(root):
    [folder] = list((root / "runs").iterdir())
    return folder


def test_course_cnn_command_line(course_data):
    assert run(CNN_COMMAND) == 0
    folder = only_run_folder(course_data)
    config = (folder / "config.yaml").read_text()
    assert "family: cnn" in config and "filters_length:\n  - 3" in config
    assert "embedding_dim: 300" in config and "- 256\n  - 128" in config
    assert "shuffle_buffer: 4096" in config and "language: spanish" in config
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["rows"] == 15 and metrics["train_rows"] == 60
    # The course's token ids were used: the vocabulary is its token_to_index.
    vocab = (folder / "vocab.txt").read_text().split()
    assert set(vocab) <= {"[PAD]", "[UNK]", *WORDS}


@pytest.mark.parametrize(
    "flags",
    [("--lstm_hidden_size", "--lstm_num_layers"), ("--lstm-hidden-size", "--lstm-num-layers")],
)
def test_course_lstm_command_line(course_data, flags):
    assert run(LSTM_COMMAND.format(hidden=flags[0], layers=flags[1])) == 0
    config = (only_run_folder(course_data) / "config.yaml").read_text()
    assert "family: lstm" in config and "hidden_size: 64" in config and "num_layers: 1" in config


def test_bert_with_a_missing_model_folder_is_one_line(course_data, capsys):
    # --classifier BERT runs end to end in tests/test_transformer.py (a tiny local BERT).
    command = CNN_COMMAND.replace("--classifier CNN", "--classifier BERT --bert-model nowhere")
    assert run(command) == 2
    err = capsys.readouterr().err
    assert "nowhere: not a transformers model folder" in err and "Traceback" not in err


@pytest.mark.parametrize("name", COURSE_LINES)
def test_the_six_course_command_lines_run_and_are_tracked(course_data, name):
    from mlflow.tracking import MlflowClient

    assert run(f"train {COURSE_LINES[name]}") == 0
    folder = only_run_folder(course_data)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    family, epochs = name.split("-")
    assert config["model"]["family"] == family
    assert config["model"]["pretrained_embeddings"] == "data/SBW-vectors-300-min5.txt.gz"
    assert config["model"]["embedding_dim"] == 300
    # The course's meaning: every epoch asked for, and a one-direction LSTM.
    assert config["training"]["epochs"] == int(epochs) and config["training"]["patience"] is None
    if family == "lstm":
        assert config["model"]["bidirectional"] is False
        assert config["model"]["hidden_size"] == 64 and config["model"]["num_layers"] == 1
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["epochs_run"] == int(epochs)
    assert metrics["test"]["rows"] == 15 and metrics["train_rows"] == 60

    client = MlflowClient(f"sqlite:///{course_data / 'mlflow.db'}")
    [tracked] = client.search_runs([client.get_experiment_by_name("prodcat").experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.info.run_id == metrics["run_id"]
    # The vectors cover every course token of the training titles (they were trained on them).
    assert tracked.data.metrics["pretrained.occurrence_coverage"] == 1.0
    assert tracked.data.metrics["test_balanced_accuracy"] == metrics["test"]["balanced_accuracy"]


def test_python_dash_m_prodcat_runs_a_course_line(course_data):
    import subprocess
    import sys

    command = [sys.executable, "-m", "prodcat", "train", *shlex.split(COURSE_LINES["mlp-1"])]
    done = subprocess.run(command + ["-q", "--no-track"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test" in done.stdout and "model folder" in done.stdout


def test_a_course_id_model_predicts_raw_titles_as_it_scores_the_files(course_data):
    from prodcat import Classifier

    assert run(f"train {COURSE_LINES['mlp-1']} --epochs 20 --output model") == 0
    clf = Classifier.load(course_data / "model")
    test_file = course_data / "data" / "meli-challenge-2019" / "spanish.test.jsonl.gz"
    scored = clf.evaluate(test_file)
    with gzip.open(test_file, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    predicted = clf.predict([r["title"] for r in rows])
    accuracy = sum(p == r["category"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy == pytest.approx(scored["accuracy"]) and accuracy > 0.9
