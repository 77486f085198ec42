"""Probabilities you can trust: temperature scaling, ECE, auto-label shares, the saved
calibration and `predict --min-confidence`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prodcat.evaluation.calibration import (
    CALIBRATION_FILE,
    auto_label_share,
    calibrate_logits,
    calibration_metrics,
    expected_calibration_error,
)


def overconfident_logits(n=4000, classes=10, overconfidence=3.0, seed=0):
    """Labels drawn from softmax(z), and logits `overconfidence` * z: a model whose
    probabilities are sharper than its accuracy (T = `overconfidence` undoes it)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=generator) * 2.0
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=generator).squeeze(1)
    return z * overconfidence, labels


def test_temperature_scaling_lowers_ece_on_overconfident_logits():
    logits, labels = overconfident_logits()
    calibration = calibrate_logits(logits, labels)
    nll = torch.nn.functional.cross_entropy
    assert calibration.ece_before > 0.15  # far surer than it is right
    assert calibration.ece_after < 0.03
    assert calibration.temperature == pytest.approx(3.0, rel=0.1)  # softened as it should be
    assert nll(logits / calibration.temperature, labels) < nll(logits, labels) - 0.3
    # The temperature changes no prediction.
    assert torch.equal((logits / calibration.temperature).argmax(1), logits.argmax(1))


def test_temperature_scaling_sharpens_underconfident_logits():
    logits, labels = overconfident_logits(overconfidence=0.3)  # far too unsure
    calibration = calibrate_logits(logits, labels)
    assert calibration.temperature == pytest.approx(0.3, rel=0.1)
    assert calibration.ece_after < calibration.ece_before


def test_ece_of_hand_built_rows():
    # Bin (14/15, 1]: confidence 0.95, right 3 of 4 -> gap 0.2; bin (3/15, 4/15]: 0.25, 1 of 2
    # -> gap 0.25. ECE = (4 * 0.2 + 2 * 0.25) / 6.
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.25, 0.25])
    correct = np.array([1, 1, 1, 0, 0, 1])
    assert expected_calibration_error(confidence, correct) == pytest.approx(1.3 / 6)
    # Right exactly as often as it says, in every bin: 0.
    assert expected_calibration_error(np.array([0.5, 0.5, 1.0]), np.array([1, 0, 1])) == 0
    # A bin's gaps of opposite sign cancel only within the bin.
    assert expected_calibration_error(np.array([0.1, 0.9]), np.array([1, 0])) == pytest.approx(0.9)


def test_auto_label_share_of_hand_built_rows():
    confidence = np.array([0.6, 0.99, 0.5, 0.97, 0.98])
    correct = np.array([0, 1, 1, 1, 1])
    # Most confident first: 1, 1, 1 (100 %), then 0 (75 %), then 1 (80 %).
    assert auto_label_share(confidence, correct, 0.95) == (pytest.approx(0.6), 0.97)
    assert auto_label_share(confidence, correct, 0.80) == (1.0, 0.5)
    # Equal confidences are taken together: a threshold cannot split them.
    assert auto_label_share(np.array([0.9, 0.9]), np.array([1, 0]), 0.95) == (0.0, 1.0)
    metrics = calibration_metrics(confidence, correct)
    assert metrics["auto_label_share_95"] == pytest.approx(0.6)
    assert metrics["auto_label_threshold_99"] == 0.97
    assert set(metrics) == {
        "ece",
        "auto_label_share_95",
        "auto_label_threshold_95",
        "auto_label_share_99",
        "auto_label_threshold_99",
    }


def test_calibration_is_saved_in_the_manifest_and_used_after_reload(small_model):
    from prodcat.serving.predictor import Classifier

    saved = json.loads((small_model / CALIBRATION_FILE).read_text())
    assert saved["temperature"] > 0 and saved["rows"] > 0
    manifest = json.loads((small_model / "manifest.json").read_text())
    assert CALIBRATION_FILE in manifest["files"]
    metrics = json.loads((small_model / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(saved["temperature"])
    for split in ("validation", "test"):
        assert 0 <= metrics[split]["ece"] <= 1
        assert 0 <= metrics[split]["auto_label_share_95"] <= 1
    assert metrics["validation"]["ece"] == pytest.approx(saved["ece_after"])

    clf = Classifier.load(small_model)
    assert clf.temperature == pytest.approx(saved["temperature"])
    titles = ["Placa Sonido Usb Behringer", "Disco Freno Ventilado", "Mochila Bebe"]
    with torch.no_grad():
        raw = clf.model(clf.featurizer(titles)).float()
    expected = torch.softmax(raw / saved["temperature"], dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(titles), expected, rtol=1e-5, atol=1e-6)
    _, top = clf.top_k(titles, 1)
    np.testing.assert_allclose(top[:, 0], expected.max(1), rtol=1e-5)


def test_a_modified_calibration_is_refused(small_model, tmp_path):
    import shutil

    from prodcat.errors import ProdcatError
    from prodcat.serving.predictor import Classifier

    copy = tmp_path / "model"
    shutil.copytree(small_model, copy)
    (copy / CALIBRATION_FILE).write_text(json.dumps({"temperature": 5.0}))
    with pytest.raises(ProdcatError, match="calibration.json"):
        Classifier.load(copy)


def test_predict_min_confidence_marks_undecided_titles(small_model, run_cli):
    # A clear title and a mixed one: the model is surer of the first.
    titles = ["Placa Sonido Usb Behringer", "Usb Bebe Freno"]
    code, out, err = run_cli(["predict", str(small_model), *titles, "--top-k", "2"])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert all(r["category_1"] for r in rows)
    low, high = sorted(float(r["probability_1"]) for r in rows)
    assert low < high
    threshold = f"{(low + high) / 2:.6f}"
    code, out, err = run_cli(
        ["predict", str(small_model), *titles, "--top-k", "2", "--min-confidence", threshold]
    )
    assert code == 0, err
    marked = list(csv.DictReader(io.StringIO(out)))
    for before, after in zip(rows, marked):
        undecided = float(before["probability_1"]) < float(threshold)
        # Undecided: every category empty, the confidences kept; decided: unchanged.
        assert after == ({**before, "category_1": "", "category_2": ""} if undecided else before)
    assert sorted(r["category_1"] == "" for r in marked) == [False, True]
    code, out, err = run_cli(
        ["predict", str(small_model), *titles, "--json", "--min-confidence", threshold]
    )
    assert code == 0, err
    best = [json.loads(line)["categories"][0] for line in out.splitlines()]
    assert [b["category"] is None for b in best] == [
        b["probability"] < float(threshold) for b in best
    ]
    code, out, err = run_cli(
        ["predict", str(small_model), *titles, "--format", "submission", "--min-confidence", "0"]
    )
    assert code == 2  # the titles have no id column: the check comes first, as before
    code, _, err = run_cli(["predict", str(small_model), "x", "--min-confidence", "1.5"])
    assert code == 2 and "--min-confidence" in err and len(err.strip().splitlines()) == 1


def test_evaluate_reports_calibration(small_model, run_cli, tmp_path):
    from tests.test_training import write_titles

    data = write_titles(tmp_path / "eval.jsonl", rows_per_category=5, seed=3)
    code, out, err = run_cli(["evaluate", str(small_model), "--data", str(data), "--json"])
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["rows"] == 20
    assert 0 <= metrics["ece"] <= 1
    assert 0 <= metrics["auto_label_share_99"] <= metrics["auto_label_share_95"] <= 1


def test_a_large_split_is_calibrated_on_a_sample_and_scored_on_every_row(small_model, tmp_path):
    # At 20 M titles the validation logits would not fit in memory: the temperature is
    # fitted on a fixed sample, and the calibrated figures still cover every row.
    from prodcat.config import build_config
    from prodcat.data.dataset import file_split
    from prodcat.evaluation.evaluate import calibrate_split, evaluate_split
    from prodcat.serving.predictor import Classifier
    from tests.test_training import write_titles

    clf = Classifier.load(small_model)
    cfg = build_config(small_model / "config.yaml", ["data.cache_dir=" + str(tmp_path)])
    data = write_titles(tmp_path / "v.jsonl", rows_per_category=10)
    split = file_split(data, cfg.data, clf.featurizer, clf.labels, "validation")
    cpu = torch.device("cpu")
    calibration, metrics = calibrate_split(clf.model, split, 16, cpu, max_rows=7)
    assert calibration.rows == 7 and metrics["rows"] == len(split) > 7
    expected, _ = evaluate_split(clf.model, split, 16, cpu, temperature=calibration.temperature)
    assert metrics == expected
    whole, _ = calibrate_split(clf.model, split, 16, cpu)
    assert whole.rows == len(split)


def whole_temperature(logits, labels):
    """The temperature fitted on every row at once (how prodcat fitted it before it went
    chunk by chunk): the reference the chunked fit must equal."""
    import torch.nn.functional as F

    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe", tolerance_change=1e-9
    )

    def nll():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def test_the_temperature_and_scores_fitted_chunk_by_chunk_are_those_of_every_row_at_once():
    from prodcat.evaluation.calibration import CHUNK_ROWS, fit_temperature
    from prodcat.evaluation.evaluate import logits_predictions

    logits, labels = overconfident_logits(n=2 * CHUNK_ROWS + 1234, classes=50)
    chunked, whole = fit_temperature(logits, labels), whole_temperature(logits, labels)
    # The NLL is flat at its minimum: float32 rounding moves T by ~1e-4 either way (3.00444
    # chunked, 3.00392 whole, 3.00489 whole in float64), the NLL by less than 1e-7.
    nll = lambda t: float(torch.nn.functional.cross_entropy(logits.double() / t, labels))  # noqa: E731
    assert chunked == pytest.approx(whole, rel=1e-3) and nll(chunked) <= nll(whole) + 1e-7
    weights = np.random.default_rng(0).uniform(0.5, 2, len(labels)).astype(np.float32)
    got = logits_predictions(logits, labels.numpy(), weights, top_k=3, temperature=2.5)
    scaled = logits / 2.5
    losses = torch.nn.functional.cross_entropy(scaled, labels, reduction="none")
    loss = float((losses * torch.from_numpy(weights)).sum() / weights.sum())
    probs, ids = torch.softmax(scaled, dim=1).topk(3, dim=1)
    assert got.loss == pytest.approx(loss, rel=1e-6)
    assert np.array_equal(got.top_ids, ids.numpy())
    np.testing.assert_allclose(got.top_probs, probs.numpy(), rtol=1e-6)


class PeakHeap:
    """The most the process's heap (RssAnon) grew while in the block, sampled every 2 ms."""

    def __enter__(self):
        import threading

        self.start = self.peak = self.heap()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def heap() -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("RssAnon:"))
        return int(line.split()[1]) * 1024

    def sample(self):
        while not self.done.wait(0.002):
            self.peak = max(self.peak, self.heap())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.heap())
        self.growth = self.peak - self.start


class FirstWordModel(torch.nn.Module):
    """Sure of one category per first word (its id modulo the categories): a model whose
    temperature is well defined when most titles' categories follow their first word."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, batch):
        first = batch.input_ids[:, 0] % self.n_classes
        return 8.0 * torch.nn.functional.one_hot(first, self.n_classes).float()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_calibrating_and_scoring_a_wide_split_holds_the_sample_logits_once(tmp_path):
    """Memory that grows with the categories, not the rows: calibrating 200,000 validation rows
    over 1,588 categories fits the temperature on a sample (50,000 rows here; its logits:
    318 MB) and scores every row batch by batch. The heap grows by less than 2.5 times the
    sample's logits: 1.8 times, measured (fitted on every sampled row at once, with autograd,
    it grew by 7.6 times: 2.4 GB)."""
    import prodcat.models  # noqa: F401  (registers the families build_config checks)
    from prodcat.config import build_config
    from prodcat.data.dataset import file_split
    from prodcat.data.featurizers.words import VocabularyFeaturizer
    from prodcat.data.vocab import LabelMap
    from prodcat.evaluation.evaluate import calibrate_split

    rows, classes, sampled = 200_000, 1588, 50_000
    rng = np.random.default_rng(0)
    words = ["".join("abcdefghij"[int(d)] for d in f"{i:04d}") for i in range(4000)]
    picks = rng.integers(0, len(words), size=(rows, 6))
    follows = rng.random(rows) < 0.7  # the first word's category; the rest at random
    path = tmp_path / "validation.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for row, follow in zip(picks, follows):
            category = (2 + row[0]) % classes if follow else rng.integers(classes)
            title = " ".join(words[j] for j in row)
            f.write(json.dumps({"title": title, "category": f"C{category}"}) + "\n")
    cfg = build_config(None, {"data.cache_dir": str(tmp_path / "c")})
    featurizer = VocabularyFeaturizer.from_tokens(words)  # word j has id 2 + j
    labels = LabelMap([f"C{i}" for i in range(classes)])
    split = file_split(path, cfg.data, featurizer, labels, "validation")
    model = FirstWordModel(classes)
    with PeakHeap() as heap:
        calibration, metrics = calibrate_split(
            model, split, 2048, torch.device("cpu"), max_rows=sampled
        )
    sample_logits = sampled * classes * 4
    assert calibration.rows == sampled and metrics["rows"] == rows
    assert 0.69 < metrics["accuracy"] < 0.71 and 0.5 < calibration.temperature < 2.0
    assert metrics["ece"] < 0.01 < calibration.ece_before
    assert heap.growth < 2.5 * sample_logits, (heap.growth / 1e6, sample_logits / 1e6)
