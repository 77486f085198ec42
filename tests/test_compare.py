"""`prodcat compare` / `prodcat report`: sweeps of variants x repeats tracked in MLflow,
resumed after a stop, summarised in a table with significance, and an HTML report whose
plots are real images; plus the protocol knobs the study needs (monitor, split_sampled)."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from prodcat.compare.runs import RunRecord
from prodcat.compare.significance import holm, paired_bootstrap
from prodcat.compare.sweep import Sweep, run_sweep
from prodcat.errors import ConfigError
from prodcat.training.callbacks import Callback
from prodcat.training.result import RunResult, Scores
from prodcat.workflow import run
from tests.test_training import small_config, write_titles


def write_sweep(path, data, uri, experiment="tiny-study", variants=None, repeats=2):
    sweep = {
        "experiment": experiment,
        "repeats": repeats,
        "tags": {"dataset": "synthetic"},
        "set": [
            f"data.train={data}",
            "data.test_size=0.2",
            "model.embedding_dim=16",
            "model.hidden_layers=[]",
            "training.epochs=4",
            "training.batch_size=16",
            "training.threads=1",
            f"data.cache_dir={path.parent / 'cache'}",
            f"tracking.uri={uri}",
        ],
        "variants": variants
        or {
            "good": {"tags": {"lr": "high"}},
            "weak": {"set": ["training.lr=0.00001", "training.epochs=1"], "tags": {"lr": "low"}},
        },
    }
    path.write_text(yaml.safe_dump(sweep), encoding="utf-8")
    return path


def tiny_space(experiment, data, trials, *settings, startup_trials=1, epochs=3, space=None):
    """A search-space file's contents: tiny MLPs on `data`, `settings` after the common ones."""
    return {
        "experiment": experiment,
        "trials": trials,
        "startup_trials": startup_trials,
        "set": [
            f"data.train={data}",
            "data.test_size=0.2",
            "model.hidden_layers=[]",
            f"training.epochs={epochs}",
            "training.batch_size=16",
            "training.threads=1",
            *settings,
        ],
        "space": space
        or {
            "training.lr": {"low": 0.001, "high": 0.1, "log": True},
            "model.embedding_dim": {"choices": [8, 16]},
        },
    }


@pytest.fixture
def sweep_setup(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return write_sweep(tmp_path / "sweep.yaml", data, uri), uri


def read_csv(path):
    with open(path, encoding="utf-8") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def test_a_sweep_table_matches_its_mlflow_runs(tmp_path, sweep_setup, run_cli):
    from mlflow.tracking import MlflowClient

    sweep_file, uri = sweep_setup
    code, out, err = run_cli(["compare", str(sweep_file), "-o", str(tmp_path / "out"), "-q"])
    assert code == 0, err
    assert "| good |" in out and "| weak |" in out

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-study")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("prodcat.sweep") == "parent"]
    children = [r for r in runs if "variant" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {(r.data.tags["variant"], r.data.tags["repeat"]) for r in children} == {
        ("good", "0"),
        ("good", "1"),
        ("weak", "0"),
        ("weak", "1"),
    }
    assert all(r.data.tags["dataset"] == "synthetic" for r in children)
    assert {r.data.params["training.seed"] for r in children} == {"0", "1"}

    table = read_csv(tmp_path / "out" / "results.csv")
    for variant, row in table.items():
        bacs = [
            r.data.metrics["test_balanced_accuracy"]
            for r in children
            if r.data.tags["variant"] == variant
        ]
        assert float(row["bac_mean"]) == pytest.approx(np.mean(bacs), abs=1e-5)
        assert float(row["bac_std"]) == pytest.approx(np.std(bacs, ddof=1), abs=1e-5)
        assert row["runs"] == "2"
    assert float(table["good"]["bac_mean"]) > 0.9 > float(table["weak"]["bac_mean"])
    # The best variant is far ahead on 24 shared test rows: the bootstrap says so.
    assert table["weak"]["significant"] == "true"
    assert float(table["weak"]["p_rows_holm"]) < 0.05
    assert table["good"]["difference_vs_best"] == ""

    # The same report again, from MLflow alone, gives the same table.
    code, out, err = run_cli(
        ["report", "--experiment", "tiny-study", "--store", uri, "-o", str(tmp_path / "rep")]
    )
    assert code == 0, err
    again = read_csv(tmp_path / "rep" / "results.csv")
    for variant in ("good", "weak"):
        for key in ("bac_mean", "bac_std", "p_rows_holm", "significant", "train_seconds_mean"):
            assert again[variant][key] == table[variant][key]


class StopInSecondEpoch(Callback):
    """Interrupts the first run that reaches its second epoch, as Ctrl-C would."""

    fired = False

    def on_batch_end(self, run, step, rows):
        if not StopInSecondEpoch.fired and run.state.epoch == 1:
            StopInSecondEpoch.fired = True
            raise KeyboardInterrupt


class Trained(Callback):
    def __init__(self):
        self.runs = []

    def on_run_start(self, run):
        self.runs.append((run.output.parent.name, run.output.name, run.resumed))


def test_a_stopped_sweep_resumes_without_redoing_finished_runs(tmp_path, sweep_setup):
    sweep_file, _ = sweep_setup
    sweep = Sweep.load(sweep_file)
    out = tmp_path / "out"
    overrides = ["tracking.enabled=false", "training.checkpoint_minutes=null"]
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, overrides=overrides, progress=False, callbacks=[StopInSecondEpoch()])
    # The first run stopped in its second epoch, with the first epoch's checkpoint kept.
    assert (out / "runs" / "good" / "r0" / "checkpoint.safetensors").is_file()
    assert not (out / "runs" / "good" / "r0" / "metrics.json").exists()

    trained = Trained()
    done = run_sweep(sweep, out, overrides=overrides, progress=False, callbacks=[trained])
    assert trained.runs == [
        ("good", "r0", True),
        ("good", "r1", False),
        ("weak", "r0", False),
        ("weak", "r1", False),
    ]
    first = (out / "runs" / "good" / "r0" / "metrics.json").stat().st_mtime_ns

    trained = Trained()
    again = run_sweep(sweep, out, overrides=overrides, progress=False, callbacks=[trained])
    assert trained.runs == []  # everything was finished
    assert (out / "runs" / "good" / "r0" / "metrics.json").stat().st_mtime_ns == first
    assert [r.test.balanced_accuracy for _, r in again] == [
        r.test.balanced_accuracy for _, r in done
    ]


def test_the_html_report_embeds_every_plot_as_a_real_image(tmp_path, sweep_setup, run_cli):
    import matplotlib.image as mpimg

    sweep_file, _ = sweep_setup
    code, _, err = run_cli(
        ["compare", str(sweep_file), "-o", str(tmp_path / "out"), "-q", "--no-track"]
    )
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    figures = dict(
        re.findall(
            r"<figure id=(\w+)><img alt='\w+' src='data:image/png;base64,"
            r"([A-Za-z0-9+/=]+)'>",
            page,
        )
    )
    assert set(figures) == {
        "bac_by_variant",
        "bac_by_lr",
        "loss_vs_bac",
        "training_curves",
        "bac_vs_time",
        "categories",
    }
    for name, encoded in figures.items():
        image = mpimg.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        height, width = image.shape[:2]
        assert height > 200 and width > 300, name
        # Drawn on, not blank: many distinct colours and a visible spread of brightness.
        assert image[..., :3].std() > 0.05, name
        assert (tmp_path / "out" / f"{name}.png").is_file()
    assert "Where good and weak differ" in page


def test_sweep_files_are_checked_with_clear_messages(tmp_path, run_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nvariants: {a: {sett: []}}\n", encoding="utf-8")
    code, _, err = run_cli(["compare", str(bad)])
    assert code == 2 and "variants.a.sett" in err and "Traceback" not in err
    code, _, err = run_cli(["compare", str(tmp_path / "missing.yaml")])
    assert code == 2 and "no such sweep file" in err
    good = write_sweep(tmp_path / "s.yaml", tmp_path / "t.jsonl", "sqlite:///x.db")
    with pytest.raises(ConfigError, match="unknown variant.*nope"):
        run_sweep(Sweep.load(good), tmp_path / "o", variants=["nope"], progress=False)
    code, _, err = run_cli(
        ["report", "--experiment", "nothing", "--store", f"sqlite:///{tmp_path / 'empty.db'}"]
    )
    assert code == 2 and "no experiment named 'nothing'" in err


def predictions(y, accuracy, seed):
    rng = np.random.default_rng(seed)
    out = y.copy()
    wrong = rng.random(len(y)) > accuracy
    out[wrong] = (y[wrong] + 1) % (y.max() + 1)
    return out


def test_the_bootstrap_flags_a_real_difference_and_not_a_null_one():
    y = np.random.default_rng(0).integers(0, 50, 3000)
    strong = [predictions(y, 0.90, s) for s in range(3)]
    weak = [predictions(y, 0.85, s + 10) for s in range(3)]
    same = [predictions(y, 0.90, s + 20) for s in range(3)]

    real = paired_bootstrap(y, strong, weak, resamples=500)
    assert real.difference == pytest.approx(0.05, abs=0.015)
    assert real.p_value < 0.01 and real.low > 0

    null = paired_bootstrap(y, strong, same, resamples=500)
    assert abs(null.difference) < 0.01
    assert null.p_value > 0.2 and null.low < 0 < null.high

    # Identical predictions: no difference, p = 1.
    assert paired_bootstrap(y, strong, strong, resamples=200).p_value == 1.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_without_predictions_falls_back_to_the_test_over_seeds():
    from prodcat.compare.report import compare

    def record(variant, repeat, bac):
        scores = Scores(balanced_accuracy=bac, accuracy=bac, macro_f1=bac, loss=1.0, rows=100)
        result = RunResult(
            family="mlp",
            output_dir=".",
            best_epoch=1,
            epochs_run=1,
            validation=scores,
            test=scores,
            train_rows=10,
            train_seconds=1.0,
            titles_per_second=1.0,
            device="cpu",
            device_type="cpu",
            parameters=10,
            history=[],
        )
        return RunRecord(variant, repeat, result)

    records = [record("a", r, 0.9 + 0.001 * r) for r in range(4)]
    records += [record("b", r, 0.8 + 0.001 * r) for r in range(4)]
    records += [record("c", r, 0.9 + 0.001 * r - 0.0005) for r in range(4)]
    c = compare(records, "x")
    by_name = {s.variant: s for s in c.summaries}
    assert c.best.variant == "a" and c.rows is None and c.notes
    assert by_name["b"].significant is True and by_name["b"].p_rows is None
    assert by_name["c"].significant is False


def test_monitor_loss_picks_the_epoch_of_lowest_validation_loss(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=20)
    cfg = small_config(
        tmp_path,
        **{
            "data.train": str(data),
            "training.epochs": 4,
            "training.monitor": "loss",
            "training.patience": None,
        },
    )
    result = run(cfg, tmp_path / "m")
    losses = [h["validation_loss"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert result.validation.loss == pytest.approx(min(losses), rel=1e-5)


def test_split_sampled_takes_validation_and_test_from_the_sample(tmp_path):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=50)  # 200 rows
    common = {
        "data.train": str(data),
        "data.max_rows": 100,
        "training.epochs": 1,
        "data.validation_size": 0.1,
        "data.test_size": 0.2,
    }
    capped = run(small_config(tmp_path, **common), tmp_path / "a")
    sampled = run(small_config(tmp_path, **common, **{"data.split_sampled": True}), tmp_path / "b")
    # max_rows alone caps the training rows; with split_sampled the 100 sampled rows are split.
    assert (capped.train_rows, capped.validation.rows, capped.test.rows) == (100, 20, 40)
    assert (sampled.train_rows, sampled.validation.rows, sampled.test.rows) == (70, 10, 20)


def test_a_tuning_study_resumes_and_never_reads_the_test_rows_until_the_end(tmp_path, run_cli):
    from mlflow.tracking import MlflowClient

    from prodcat.config import build_config

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tiny_space(
        "tiny-tune", data, 3, f"data.cache_dir={tmp_path / 'cache'}", f"tracking.uri={uri}"
    )
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space), encoding="utf-8")
    out = tmp_path / "study"

    code, stdout, err = run_cli(["tune", str(space_file), "-o", str(out), "--trials", "2", "-q"])
    assert code == 0, err
    first = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert len(first) == 2

    code, stdout, err = run_cli(["tune", str(space_file), "-o", str(out), "-q"])
    assert code == 0, err
    finished, pruned = re.search(r"(\d) trials finished, (\d) pruned", stdout).groups()
    assert int(finished) + int(pruned) == 3 and int(finished) >= 1
    assert "test (scored once): BAC" in stdout
    after = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert len(after) == 3 and all(after[name] == t for name, t in first.items())

    best = build_config(out / "best.yaml")
    assert best.model.embedding_dim in (8, 16) and 0.001 <= best.training.lr <= 0.1
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-tune")
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if "trial" in r.data.tags]
    parent = [r for r in runs if r.data.tags.get("prodcat.study") == "parent"]
    assert len(trials) == 3 and len(parent) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent[0].info.run_id}
    # Trials were scored on validation rows only.
    assert not any(k.startswith("test_") for r in trials for k in r.data.metrics)

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**space, "space": {"training.nope": {"low": 1, "high": 2}}}),
        encoding="utf-8",
    )
    code, _, err = run_cli(["tune", str(bad), "-o", str(tmp_path / "b"), "--no-track"])
    assert code == 2 and "unknown config key(s) training.nope" in err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_report_renders_in_a_headless_browser(tmp_path, sweep_setup, run_cli):
    import matplotlib.image as mpimg

    sweep_file, _ = sweep_setup
    code, _, err = run_cli(
        ["compare", str(sweep_file), "-o", str(tmp_path / "out"), "-q", "--no-track"]
    )
    assert code == 0, err
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            "--enable-logging=stderr",
            (tmp_path / "out" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CONSOLE" not in done.stderr and "Uncaught" not in done.stderr
    image = mpimg.imread(shot)
    assert image.shape[:2] == (2400, 1200)
    # The page drew the table and plots: far from a blank white screen.
    assert (image[..., :3] < 0.5).mean() > 0.01


def test_report_merges_the_runs_of_several_stores(tmp_path, run_cli):
    data = write_titles(tmp_path / "train.jsonl", rows_per_category=30)
    stores = []
    for machine, variant in (("a", "good"), ("b", "weak")):
        uri = f"sqlite:///{tmp_path / f'{machine}.db'}"
        sweep = write_sweep(tmp_path / f"{machine}.yaml", data, uri, repeats=1)
        code, _, err = run_cli(
            ["compare", str(sweep), "-o", str(tmp_path / machine), "-q", "-v", variant]
        )
        assert code == 0, err
        stores.append(uri)
    code, out, err = run_cli(
        [
            "report",
            "--experiment",
            "tiny-study",
            "--store",
            stores[0],
            "--store",
            stores[1],
            "-o",
            str(tmp_path / "merged"),
        ]
    )
    assert code == 0, err
    table = read_csv(tmp_path / "merged" / "results.csv")
    assert set(table) == {"good", "weak"}
    assert table["good"]["bac_mean"] == read_csv(tmp_path / "a" / "results.csv")["good"]["bac_mean"]


def test_values_queued_twice_by_workers_that_start_at_once_train_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from prodcat.compare.study import SURPLUS
    from prodcat.compare.tune import TuneSpec, tune

    data = write_titles(tmp_path / "train.jsonl", rows_per_category=20)
    spec = TuneSpec.model_validate(
        tiny_space(
            "twice",
            data,
            3,
            f"data.cache_dir={tmp_path / 'cache'}",
            "tracking.enabled=false",
            startup_trials=3,
            epochs=1,
            space={"training.lr": {"low": 0.001, "high": 0.1, "log": True}},
        )
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Two workers each queued a failed trial's values again before either saw the other's.
    study = optuna.create_study(study_name="twice", storage=storage, direction="maximize")
    for _ in range(2):
        study.enqueue_trial({"training.lr": 0.01})
    result = tune(spec, tmp_path / "out", storage=storage, progress=False)

    trials = optuna.load_study(study_name="twice", storage=storage).get_trials()
    surplus = [t for t in trials if t.user_attrs.get(SURPLUS)]
    settled = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(surplus) == 1 and surplus[0].number == 1 and surplus[0].params == {}
    assert [t.params["training.lr"] for t in settled][0] == 0.01
    assert len(settled) == 3 and len({t.params["training.lr"] for t in settled}) == 3
    assert len(result.trials) == 3 and len(list((tmp_path / "out" / "trials").iterdir())) == 3
