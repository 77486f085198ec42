"""`--output` is checked before any work: a file, an unwritable folder or another run's folder
is a one-line error, so two runs' files never mix."""

from __future__ import annotations

import os

import pytest

from tests.test_training import small_overrides, write_titles


@pytest.fixture
def train_args(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=10)

    def make(output, *extra, **settings):
        args = ["train", "--train", str(data), "--output", str(output), "-q", *extra]
        overrides = small_overrides(tmp_path, **{"training.epochs": 1, **settings})
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        return args

    return make


def assert_refused(run_cli, args, message, tmp_path):
    code, out, err = run_cli(args)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()  # refused before the data was read


def test_an_output_that_is_a_file_is_refused_before_training(tmp_path, run_cli, train_args):
    target = tmp_path / "out.txt"
    target.write_text("notes")
    assert_refused(run_cli, train_args(target), f"{target}: --output is a file", tmp_path)
    assert target.read_text() == "notes"


def test_an_output_below_a_file_is_refused(tmp_path, run_cli, train_args):
    (tmp_path / "out.txt").write_text("notes")
    target = tmp_path / "out.txt" / "run"
    message = f"{target}: cannot create the output folder ({tmp_path / 'out.txt'} is a file)"
    assert_refused(run_cli, train_args(target), message, tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_output_is_refused(tmp_path, run_cli, train_args):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_refused(
            run_cli, train_args(locked / "run"), "cannot write the output folder", tmp_path
        )
    finally:
        locked.chmod(0o700)


def test_another_runs_folder_is_refused_unless_resumed(tmp_path, run_cli, train_args):
    output = tmp_path / "run"
    code, _, err = run_cli(train_args(output))
    assert code == 0, err
    before = (output / "model.safetensors").read_bytes()

    code, _, err = run_cli(train_args(output, **{"model.embedding_dim": 8}))
    assert code == 2
    assert f"{output}: holds a finished run with a different config" in err
    assert "--resume" in err and "Traceback" not in err
    assert (output / "model.safetensors").read_bytes() == before  # untouched

    # The same config again retrains it; --resume continues it with new settings.
    assert run_cli(train_args(output))[0] == 0
    code, _, err = run_cli(train_args(output, "--resume", **{"training.epochs": 2}))
    assert code == 0, err
