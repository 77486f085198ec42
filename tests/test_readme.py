"""The README's prediction examples give what they show, with the model `make run` trains.

Trains that model once (the default MLP on the bundled sample, about 40 s on 2 CPU cores),
then runs the README's `prodcat predict` lines and its Python block against it.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FOLDER = re.compile(r"runs/mlp-\d{8}-\d{6}")  # the folder the README's examples name


@pytest.fixture(scope="module")
def make_run_model(tmp_path_factory) -> Path:
    """What `make run` does: `prodcat train` with no options, in a fresh working directory."""
    from prodcat.cli.main import main

    root = tmp_path_factory.mktemp("make-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("PRODCAT_CACHE", str(root / "cache"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(SystemExit) as done:
            main(["train"])
    assert done.value.code == 0
    [folder] = (root / "runs").glob("mlp-*")
    return folder


def blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_readme_predict_command_prints_what_it_shows(make_run_model, run_cli):
    examples = 0
    for block in blocks("console"):
        commands = re.split(r"^\$ ", block, flags=re.M)[1:]
        for command in commands:
            line, _, shown = command.partition("\n")
            args = shlex.split(FOLDER.sub(str(make_run_model), line))
            if Path(args[0]).name != "prodcat" or args[1] != "predict":
                continue
            code, out, err = run_cli(args[1:])
            assert code == 0, err
            assert out == shown
            examples += 1
    assert examples >= 1


def test_the_readme_python_example_gives_what_its_comments_show(make_run_model):
    [block] = [b for b in blocks("python") if "Classifier.load(" in b]
    namespace: dict = {}
    checked = 0
    for line in block.splitlines():
        code, _, comment = line.partition("  # ")
        code = FOLDER.sub(str(make_run_model), code).strip()
        if not code:
            continue
        try:
            expected = ast.literal_eval(comment.strip())
        except (ValueError, SyntaxError):
            exec(code, namespace)  # an import or an assignment; its comment is prose
            continue
        assert eval(code, namespace) == expected, line
        checked += 1
    assert checked >= 3
