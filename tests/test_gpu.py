"""GPU checks: run where CUDA is available (a lent GPU machine), skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

from prodcat import Classifier
from prodcat.data.dataset import load_splits
from prodcat.training.loop import train
from tests.test_training import small_config, write_titles

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("family", ["mlp", "cnn", "lstm"])
def test_trains_on_cuda_with_bf16_and_predicts_on_cpu(tmp_path, family):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=40)
    extra = {"model.family": family, "training.epochs": 8, "training.device": "cuda"}
    cfg = small_config(tmp_path, **extra)
    result = train(cfg, load_splits(cfg.data, data), tmp_path / "model")
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.device == torch.cuda.get_device_name()
    assert result.test.balanced_accuracy >= 0.9
    clf = Classifier.load(tmp_path / "model")  # saved weights load on the CPU
    assert clf.predict(["Placa Sonido Usb Behringer"]) == ["SOUND_CARDS"]
