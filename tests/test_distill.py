"""Distillation (`training.teacher`): the loss is Hinton's, a teacher folder's probabilities
are computed once and cached, a teacher named by its config trains first beside the student,
and mistakes are one-line errors."""

from __future__ import annotations

import gzip
import json
import os
import random

import numpy as np
import pytest
import torch

from prodcat.config import build_config
from prodcat.data.batches import Batch
from prodcat.errors import ConfigError
from prodcat.evaluation.evaluate import weighted_loss
from prodcat.workflow import run
from prodcat.workflow.distill import perturb
from tests.test_training import small_overrides, write_titles


def test_the_distillation_loss_is_hintons():
    torch.manual_seed(0)
    logits = torch.randn(5, 7) * 3
    labels = torch.tensor([0, 3, 6, 2, 2])
    teacher_logits = torch.randn(5, 7) * 2
    p, ids = torch.softmax(teacher_logits / 2, 1).topk(3, dim=1)
    p = p / p.sum(1, keepdim=True)
    batch = Batch(torch.zeros(5, 1), torch.ones(5), labels, teacher_ids=ids, teacher_probs=p)
    loss, weight = weighted_loss(logits, batch, distill=(0.3, 2.0))
    hard = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    log_q = torch.log_softmax(logits / 2, 1).gather(1, ids)
    soft = (p * (p.log() - log_q)).sum(1) * 4
    assert float(weight) == 5
    assert float(loss) == pytest.approx(float((0.7 * hard + 0.3 * soft).sum()), rel=1e-6)
    # A student that gives the teacher's probabilities over every class diverges by 0.
    full = Batch(
        torch.zeros(5, 1),
        torch.ones(5),
        labels,
        teacher_ids=torch.arange(7).repeat(5, 1),
        teacher_probs=torch.softmax(logits / 2, 1),
    )
    loss, _ = weighted_loss(logits, full, distill=(1.0, 2.0))
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    # Without a teacher's probabilities (validation rows), the labels' loss alone.
    bare = Batch(torch.zeros(5, 1), torch.ones(5), labels)
    plain, _ = weighted_loss(logits, bare, distill=(1.0, 2.0))
    assert float(plain) == pytest.approx(float(hard.sum()), rel=1e-6)


def small_run(tmp_path, output, **extra):
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_titles(data, rows_per_category=40)
    settings = small_overrides(tmp_path, **{"data.train": str(data), "training.epochs": 6})
    settings.update({"training.lr": 0.05, "data.test_size": 0.2, **extra})
    return run(build_config(overrides=settings), tmp_path / output)


def test_a_student_learns_from_a_teacher_folders_probabilities_computed_once(tmp_path):
    teacher = small_run(tmp_path, "teacher")
    assert teacher.test.balanced_accuracy > 0.9
    # The labels weigh nothing: what the student learns, it learns from the teacher.
    distil = {"training.teacher": str(tmp_path / "teacher"), "training.distill_weight": 1.0}
    distil.update({"training.distill_temperature": 2.0, "training.teacher_top_k": 3})
    student = small_run(tmp_path, "student", **distil)
    assert student.test.balanced_accuracy > 0.9
    [cached] = list((tmp_path / "c" / "teachers").glob("*.npz"))
    with np.load(cached) as saved:
        ids, probs = saved["ids"], saved["probs"]
    assert ids.shape == probs.shape == (student.train_rows, 3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert 0.3 < probs[:, 0].mean() < 0.999  # softened at temperature 2, not one-hot
    # Computed once: a second student of the same rows needs the teacher's files no more.
    os.remove(tmp_path / "teacher" / "model.safetensors")
    again = small_run(tmp_path, "student-2", **distil)
    assert again.test.balanced_accuracy == student.test.balanced_accuracy


def test_a_teacher_named_by_its_config_trains_first_beside_the_student(tmp_path):
    config = tmp_path / "teacher.yaml"
    config.write_text(
        "model:\n  family: mlp\n  embedding_dim: 16\n  hidden_layers: []\n"
        "training:\n  epochs: 5\n  lr: 0.05\n  batch_size: 16\n  progress: false\n",
        encoding="utf-8",
    )
    result = small_run(tmp_path, "compact", **{"training.teacher": str(config)})
    teacher = tmp_path / "compact-teacher"
    assert (teacher / "metrics.json").is_file() and (teacher / "model.safetensors").is_file()
    assert not (tmp_path / "compact" / "compact-teacher").exists()
    assert result.test.balanced_accuracy > 0.9
    # The teacher trained on the student's data section: the same rows in each split.
    teacher_cfg = build_config(teacher / "config.yaml")
    student_cfg = build_config(tmp_path / "compact" / "config.yaml")
    assert teacher_cfg.data == student_cfg.data
    assert teacher_cfg.model.embedding_dim == 16 and teacher_cfg.training.epochs == 5
    # Run again, the finished teacher of the same config is kept.
    stamp = (teacher / "metrics.json").stat().st_mtime_ns
    small_run(tmp_path, "compact", **{"training.teacher": str(config)})
    assert (teacher / "metrics.json").stat().st_mtime_ns == stamp


def test_teacher_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither a model folder nor a config file"):
        small_run(tmp_path, "a", **{"training.teacher": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="distill_copies are labelled by a teacher"):
        small_run(tmp_path, "e", **{"training.distill_copies": 2})
    with pytest.raises(ConfigError, match="set mixup: 0 to distil"):
        small_run(tmp_path, "b", **{"training.teacher": str(tmp_path), "training.mixup": 0.2})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a model folder"):
        small_run(tmp_path, "c", **{"training.teacher": str(tmp_path / "empty")})
    # A teacher trained on other categories cannot teach these.
    other = tmp_path / "other.jsonl"
    write_titles(other, rows_per_category=10)
    lines = other.read_text(encoding="utf-8").replace("SOUND_CARDS", "GUITARS")
    other.write_text(lines, encoding="utf-8")
    small_run(tmp_path, "guitars", **{"data.train": str(other), "training.epochs": 1})
    with pytest.raises(ConfigError, match="the teacher knows no category 'SOUND_CARDS'"):
        small_run(tmp_path, "d", **{"training.teacher": str(tmp_path / "guitars")})


def test_perturbed_copies_of_the_training_titles_join_them_with_the_teachers_probabilities(
    tmp_path,
):
    teacher = small_run(tmp_path, "teacher")
    distil = {"training.teacher": str(tmp_path / "teacher"), "training.distill_weight": 1.0}
    student = small_run(tmp_path, "student", **distil, **{"training.distill_copies": 3})
    assert student.train_rows == 4 * teacher.train_rows
    assert student.test.balanced_accuracy > 0.9
    [transfer] = list((tmp_path / "c" / "teachers").glob("*.transfer.jsonl.gz"))
    with gzip.open(transfer, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == student.train_rows
    originals = rows[::4]
    with open(tmp_path / "train.jsonl", encoding="utf-8") as f:
        written = {(r["title"], r["category"]) for r in map(json.loads, f)}
    # Each training row as read, then its copies: the same category, the training titles'
    # words, and not all the same title again.
    assert {(r["title"], r["category"]) for r in originals} <= written
    words = {word for title, _ in written for word in title.split()}
    changed = 0
    for i, original in enumerate(originals):
        for copy in rows[4 * i + 1 : 4 * i + 4]:
            assert copy["category"] == original["category"]
            assert copy["title"] and set(copy["title"].split()) <= words
            changed += copy["title"] != original["title"]
    assert changed > 0.5 * 3 * len(originals)
    [targets] = list((tmp_path / "c" / "teachers").glob("*.npz"))
    with np.load(targets) as saved:
        assert saved["probs"].shape[0] == student.train_rows
        # The teacher is surer of its own training titles than of their copies.
        top = saved["probs"][:, 0].reshape(-1, 4)
        assert top[:, 0].mean() > top[:, 1:].mean() + 0.02
    # Written once: the same student again reads both files as they are.
    stamp = transfer.stat().st_mtime_ns
    again = small_run(tmp_path, "student-2", **distil, **{"training.distill_copies": 3})
    assert transfer.stat().st_mtime_ns == stamp
    assert again.test.balanced_accuracy == student.test.balanced_accuracy


def test_a_copy_of_a_title_is_never_empty_and_the_same_for_the_same_seed():
    title, other = ["placa", "de", "sonido", "behringer"], ["guitarra", "criolla", "fonseca"]
    draws = [perturb(title, other, title + other, random.Random(seed)) for seed in range(200)]
    assert all(draws)
    assert draws == [perturb(title, other, title + other, random.Random(s)) for s in range(200)]
    assert len({tuple(d) for d in draws}) > 20
    assert any("guitarra" not in d and "fonseca" in d for d in draws)  # half of another
