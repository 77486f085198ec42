"""What a `prodcat[serve,onnx]` install needs: the dependency metadata keeps torch and mlflow
out of the base and the serving extras, the commands a torch-free install runs import none
of the training stack, and commands that need a missing extra say what to install."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prodcat.extras import EXTRAS, MODULE_EXTRA

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
BASE = {"numpy", "pyarrow", "pydantic", "pyyaml", "typer", "rich"}
TRAINING_STACK = {"torch", "mlflow", "safetensors", "scikit-learn", "scipy", "matplotlib"}
TRAINING_STACK |= {"gensim", "optuna"}
# Imported modules of the training stack (sklearn is scikit-learn, PIL matplotlib's).
HEAVY_MODULES = ("torch", "mlflow", "sklearn", "scipy", "matplotlib", "pandas", "gensim")
HEAVY_MODULES += ("optuna", "safetensors", "PIL", "transformers")


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower()


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_base_and_serving_extras_leave_out_torch_and_mlflow(project):
    base = {requirement_name(r) for r in project["dependencies"]}
    assert base == BASE
    extras = {
        k: {requirement_name(r) for r in v} for k, v in project["optional-dependencies"].items()
    }
    assert extras["serve"] == {"fastapi", "uvicorn", "httpx"}
    assert extras["onnx"] == {"onnx", "onnxruntime", "tokenizers"}
    assert TRAINING_STACK <= extras["train"]
    for name in ("serve", "onnx"):
        assert not extras[name] & TRAINING_STACK, name
    # The CLI's messages name extras that exist, for modules the extra installs.
    assert set(MODULE_EXTRA.values()) <= set(EXTRAS) <= set(extras)
    assert "schemathesis" in extras["test"]


def test_makefile_installs_every_extra_the_tests_need():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert '-e ".[train,test,encoders,serve,onnx,team]"' in makefile
    # torch's CPU build first: an unpinned torch would pull a multi-GB CUDA build.
    assert makefile.index('"$(TORCH)"') < makefile.index("[train,")


# Runs prodcat's CLI with the modules named in argv[1] made uninstallable, as in an install
# without the extra that brings them; prints one JSON line per command.
WITHOUT_SCRIPT = """
import contextlib, io, json, sys
from importlib.abc import MetaPathFinder

blocked = set(sys.argv[1].split(","))

class Uninstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
from prodcat.cli.main import main

for args in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException as e:
            code, err = -1, io.StringIO(f"{type(e).__name__}: {e}")
    print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in blocked)))
"""


def run_without(
    modules: tuple[str, ...], items: list, script: str = WITHOUT_SCRIPT, timeout: int = 120
) -> tuple[list, list]:
    """Run `script` (default: prodcat's CLI on each of `items`, a list of command lines) in a
    Python where `modules` cannot be imported; its answer per item, and the blocked modules
    it imported all the same."""
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(modules), json.dumps(items)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *results, imported = map(json.loads, done.stdout.splitlines())
    assert len(results) == len(items), done.stdout
    return results, imported


def test_help_version_and_onnx_predict_without_the_training_stack(small_model, tmp_path):
    from prodcat.serving.onnx_export import export_onnx

    graph = export_onnx(small_model, tmp_path / "model.onnx")
    onnx = ["--runtime", "onnx", "--onnx", str(graph)]
    commands = [
        ["--help"],
        ["--version"],
        ["predict", "--help"],
        ["predict", str(small_model), "Lavarropas Drean", "--format", "jsonl", *onnx],
        ["train", "--no-track"],
        ["predict", str(small_model), "Lavarropas Drean"],
        ["serve", str(small_model)],
        ["evaluate", str(small_model), "--data", str(tmp_path / "none.csv")],
        ["compare", str(tmp_path / "sweep.yaml")],
        ["vectors", "train", "-i", "x.csv", "-o", str(tmp_path / "v.txt")],
    ]
    results, imported = run_without(HEAVY_MODULES, commands)
    assert imported == []
    (help_, version, predict_help, predicted, *refused) = results
    assert help_["code"] == 0 and "predict" in help_["out"] and "serve" in help_["out"]
    assert version == {"code": 0, "out": "prodcat 0.1.0\n", "err": ""}
    assert predict_help["code"] == 0 and "--runtime" in predict_help["out"]
    assert predicted["code"] == 0, predicted["err"]
    [row] = map(json.loads, predicted["out"].splitlines())
    from prodcat import Classifier

    [[(category, probability)]] = Classifier.load(small_model).predict_top_k(
        ["Lavarropas Drean"], 1
    )
    assert row["categories"][0]["category"] == category
    assert row["categories"][0]["probability"] == pytest.approx(probability, abs=1e-5)
    # Each command that needs torch says so in one line, and what to install.
    names = ["train", "predict", "serve", "evaluate", "compare", "vectors train"]
    for name, result in zip(names, refused):
        assert result["code"] == 1, (name, result)
        assert result["err"].count("\n") == 1 and "Traceback" not in result["err"], result
        assert f"error: prodcat {name} needs the training dependencies" in result["err"]
        assert "pip install 'prodcat[train]'" in result["err"]
    train_error = refused[0]["err"]
    assert train_error == (
        "error: prodcat train needs the training dependencies (torch is not installed): "
        "pip install 'prodcat[train]'\n"
    )
    for result in refused[1:3]:  # predict and serve on torch point to the ONNX runtime
        assert "--runtime onnx" in result["err"]


# Predicts with each folder's exported graph through the CLI and the HTTP app, with the
# modules named in argv[1] made uninstallable; prints one JSON line per folder.
SERVE_ONNX_SCRIPT = (
    WITHOUT_SCRIPT.split("from prodcat.cli.main import main")[0]
    + """
import contextlib, io
from fastapi.testclient import TestClient
from prodcat.cli.main import main
from prodcat.serving.app import create_app
from prodcat.serving.runtimes import load_classifier

for folder in json.loads(sys.argv[2]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["predict", folder, "Lavarropas Drean", "--runtime", "onnx", "--format", "jsonl"])
        except SystemExit as e:
            assert not e.code, e.code
    with TestClient(create_app(load_classifier(folder, "onnx"))) as client:
        answer = client.post("/predict", json={"titles": ["Disco De Freno"], "top_k": 2})
        assert answer.status_code == 200, answer.text
    print(json.dumps([json.loads(out.getvalue()), answer.json()["predictions"][0]]))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in blocked)))
"""
)


def test_every_exported_family_is_served_without_the_training_stack(tmp_path):
    """Every family that exports (tests/data/legacy-folders), a transformer's tokenizer and
    an ensemble's members included: `predict` and the HTTP app on its graph, with torch,
    transformers, mlflow and the rest of the training stack uninstallable."""
    pytest.importorskip("onnx")
    pytest.importorskip("fastapi")
    from prodcat import Classifier
    from prodcat.serving.onnx_export import export_onnx

    legacy = Path(__file__).parent / "data" / "legacy-folders"
    names = ["mlp", "mlp-ngrams", "cnn", "lstm", "gru", "linear", "linear-full-rank"]
    names += ["ensemble", "transformer"]
    folders = []
    for name in names:
        shutil.copytree(legacy / name, tmp_path / name)
        export_onnx(tmp_path / name)
        folders.append(str(tmp_path / name))
    answers, imported = run_without(HEAVY_MODULES, folders, SERVE_ONNX_SCRIPT, timeout=300)
    assert imported == [] and len(answers) == len(names)
    for folder, (predicted, served) in zip(folders, answers):
        clf = Classifier.load(folder)
        [[(category, probability)]] = clf.predict_top_k(["Lavarropas Drean"], 1)
        assert predicted["categories"][0]["category"] == category, folder
        assert predicted["categories"][0]["probability"] == pytest.approx(probability, abs=1e-5)
        top = [(c["category"], c["probability"]) for c in served["categories"]]
        expected = clf.predict_top_k(["Disco De Freno"], 2)[0]
        assert [c for c, _ in top] == [c for c, _ in expected], folder
        assert [p for _, p in top] == pytest.approx([p for _, p in expected], abs=1e-5)


def test_serve_without_the_serve_extra_says_what_to_install(small_model):
    [result], _ = run_without(("fastapi", "uvicorn"), [["serve", str(small_model)]])
    assert result["code"] == 1
    assert result["err"] == (
        "error: prodcat serve needs the HTTP server's dependencies (fastapi is not installed): "
        "pip install 'prodcat[serve]'\n"
    )


def test_predict_on_onnx_without_onnxruntime_says_what_to_install(small_model):
    command = ["predict", str(small_model), "Bolso", "--runtime", "onnx"]
    [result], _ = run_without(("onnxruntime",), [command])
    assert result["code"] == 2 and "pip install 'prodcat[onnx]'" in result["err"]
