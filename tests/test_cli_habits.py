"""The command line's habits: results on stdout, progress and logs on stderr, whole lines in a
pipe, `--json` where a result is read by a program, `--version`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.test_cli import prodcat
from tests.test_training import write_titles

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_version():
    result = prodcat("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"prodcat {version('prodcat')}\n"


def test_synthetic_titles_summary_piped_to_json_tool(tmp_path):
    path = tmp_path / "synthetic-titles.csv"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "synth.py"
    synth = subprocess.run(
        [sys.executable, str(script), "-n", "300", "-o", str(path)], capture_output=True, text=True
    )
    assert synth.returncode == 0, synth.stderr
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=synth.stdout, capture_output=True, text=True
    )
    assert tool.returncode == 0, tool.stderr
    summary = json.loads(tool.stdout)
    assert summary["rows"] == 300 and summary["bytes"] == path.stat().st_size


def test_data_stats_json_piped_to_json_tool(tmp_path):
    data = write_titles(tmp_path / ("titles-with-a-long-name-" * 4 + ".jsonl"), 10)
    stats = prodcat("data", "stats", data, "--json")
    assert stats.returncode == 0, stats.stderr
    # One line, longer than the 80 columns Rich gives a pipe.
    [line] = stats.stdout.splitlines()
    assert len(line) > 80
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=stats.stdout, capture_output=True, text=True
    )
    assert tool.returncode == 0, tool.stderr
    assert json.loads(tool.stdout)["rows"] == 40


def test_train_json_prints_the_result_alone_on_stdout(run_cli, tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=20)
    folder = tmp_path / ("a-model-folder-with-a-long-name-" * 3) / "model"
    settings = ["training.epochs=2", "model.embedding_dim=16"]
    args = ["train", "--train", str(data), "--output", str(folder), "--no-track", "--json"]
    code, out, err = run_cli(args + [x for s in settings for x in ("--set", s)])
    assert code == 0, err
    [line] = out.splitlines()
    result = json.loads(line)
    assert result == json.loads((folder / "metrics.json").read_text())
    assert (result["epochs_run"], result["train_rows"], result["test"]["rows"]) == (2, 64, 8)
    # Progress and logs went to stderr, each log on one line however long.
    assert "epoch 1/2" in err
    assert f"INFO saved the model in {folder}\n" in err


def test_predict_json_writes_one_object_per_title(small_model, run_cli):
    titles = ["Placa Sonido Usb Behringer", "Lavarropas Drean 8 Kilos"]
    code, out, err = run_cli(["predict", str(small_model), *titles, "--json", "--top-k", "2"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["line"], r["title"]) for r in rows] == [(1, titles[0]), (2, titles[1])]
    assert [r["categories"][0]["category"] for r in rows] == ["SOUND_CARDS", "WASHING_MACHINES"]
    assert all(len(r["categories"]) == 2 for r in rows)
    code, out, err = run_cli(["predict", str(small_model), "x", "--json", "-f", "submission"])
    assert code == 2 and "--json" in err and len(err.strip().splitlines()) == 1


def test_data_stats_json(write_csv, run_cli, tmp_path):
    rows = [
        ("Mochila Bolso Bebé", "reliable", "spanish", "DIAPER_BAGS"),
        ("Mochila Maternal", "unreliable", "spanish", "DIAPER_BAGS"),
        ("Bolsa Maternidade Bebê", "reliable", "portuguese", "DIAPER_BAGS"),
        ("Cava De Vino", "reliable", "spanish", "WINE_CELLARS"),
        ("Adega Vinho 12 Garrafas", "reliable", "portuguese", "WINE_CELLARS"),
    ]
    path = write_csv("train.csv", ["title", "label_quality", "language", "category"], rows)
    code, out, err = run_cli(["data", "stats", str(path), "--json"])
    assert code == 0, err
    stats = json.loads(out)
    assert stats["rows_read"] == 5 and stats["rows"] == 5 and stats["empty_titles"] == 0
    assert stats["languages"] == {"spanish": 3, "portuguese": 2}
    assert stats["label_quality"] == {"reliable": 4, "unreliable": 1}
    assert stats["categories"] == {
        "count": 2,
        "rows_min": 2,
        "rows_median": 2,
        "rows_max": 3,
        "largest": {"DIAPER_BAGS": 3, "WINE_CELLARS": 2},
    }
    assert stats["tokens_per_title"]["max"] == 4


def test_results_of_a_piped_command_are_whole_lines(tmp_path):
    env = {**os.environ, "PRODCAT_CACHE": str(tmp_path / "cache"), "COLUMNS": "80"}
    data = write_titles(tmp_path / ("long-file-name-" * 8 + ".jsonl"), rows_per_category=5)
    result = prodcat("data", "prepare", "-i", data, "-o", tmp_path / "prepared", env=env)
    assert result.returncode == 0, result.stderr
    assert f"read 20 rows from {data}\n" in result.stdout
