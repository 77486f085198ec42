"""Checkpoints load without pickle, round-trip exactly, and a damaged one is refused by name."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from prodcat.atomic import atomic_path
from prodcat.config import build_config
from prodcat.data.dataset import load_splits
from prodcat.errors import ConfigError
from prodcat.training.checkpoint import (
    CHECKPOINT,
    LEGACY_CHECKPOINT,
    load_checkpoint,
    save_checkpoint,
)
from prodcat.training.loop import train
from tests.test_training import small_overrides, write_titles


def a_state() -> dict:
    shared = torch.arange(6, dtype=torch.float32)
    return {
        "state": {"epoch": 3, "best_score": -math.inf, "history": [{"loss": 0.1 + 0.2}]},
        "model": {"w": torch.randn(3, 4), "tied": shared, "tied_too": shared[:3]},
        "optimizer": {
            "state": {
                0: {"step": torch.tensor(7.0), "exp_avg": torch.ones(2, dtype=torch.bfloat16)}
            },
            "param_groups": [{"params": [0], "betas": (0.9, 0.999), "foreach": None}],
        },
        "rng": torch.get_rng_state(),
        "mask": torch.tensor([True, False]),
        "nan": math.nan,
        "cuda_rng": None,
        "empty": torch.zeros(0),
    }


def test_a_checkpoint_round_trips_exactly(tmp_path):
    state = a_state()
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)

    assert loaded["state"] == state["state"]
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert list(loaded["optimizer"]["state"]) == [0]  # integer keys stay integers
    for key, tensor in state["optimizer"]["state"][0].items():
        assert torch.equal(loaded["optimizer"]["state"][0][key], tensor)
        assert loaded["optimizer"]["state"][0][key].dtype == tensor.dtype
    for key, tensor in state["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert torch.equal(loaded["rng"], state["rng"])
    assert torch.equal(loaded["mask"], state["mask"])
    assert math.isnan(loaded["nan"]) and loaded["cuda_rng"] is None
    assert loaded["empty"].shape == (0,)


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path) is None


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
        (lambda p: p.write_bytes(b""), "unreadable"),
        (flip_last_byte, "checksum does not match"),
    ],
    ids=["truncated", "empty", "flipped-byte"],
)
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, damage, why):
    save_checkpoint(tmp_path, a_state())
    damage(tmp_path / CHECKPOINT)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / CHECKPOINT}: damaged checkpoint: ")
    assert why in str(error.value)
    assert "\n" not in str(error.value)


class RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_a_pickled_checkpoint_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / LEGACY_CHECKPOINT).write_bytes(pickle.dumps({"state": RunsCode()}, protocol=2))
    with pytest.raises(ConfigError, match="cannot be read safely"):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_an_old_pickled_checkpoint_of_plain_tensors_still_loads(tmp_path):
    torch.save({"state": {"epoch": 2}, "model": {"w": torch.ones(2)}}, tmp_path / LEGACY_CHECKPOINT)
    loaded = load_checkpoint(tmp_path)
    assert loaded["state"] == {"epoch": 2} and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_a_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, a_state())
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / CHECKPOINT) as tmp:
        tmp.write_bytes(before[:100])
        raise RuntimeError("killed while writing")
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary left


def test_resume_with_a_damaged_checkpoint_is_a_one_line_error(tmp_path, run_cli):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=10)
    settings = {"training.epochs": 1, "training.keep_checkpoint": True}
    overrides = small_overrides(tmp_path, **settings)
    cfg = build_config(overrides=overrides)
    train(cfg, load_splits(cfg.data, data), tmp_path / "run")
    flip_last_byte(tmp_path / "run" / CHECKPOINT)

    args = ["train", "--train", str(data), "--output", str(tmp_path / "run"), "--resume", "-q"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    code, out, err = run_cli(args)
    assert code != 0
    assert f"{tmp_path / 'run' / CHECKPOINT}: damaged checkpoint" in err
    assert "Traceback" not in err
