"""Train one tiny model folder per family with prodcat as of commit 6c1a038 (before issue 22),
and record what each predicts, so that later code can be checked to load and predict the same
(tests/test_model_folder.py). Its imports are that commit's: run it from a checkout of it,

    git worktree add /tmp/prodcat-6c1a038 6c1a038
    cd /tmp/prodcat-6c1a038 && PYTHONPATH=src python tests/data/legacy-folders/make.py OUT

then keep of each folder the files its manifest lists (the script prunes the rest).
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout, for tests/
from prodcat.training.run import run

from prodcat import Classifier
from prodcat.config import build_config
from tests.test_training import write_titles
from tests.test_transformer import make_tiny_bert

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
work = Path("/tmp/legacy/work")
shutil.rmtree(work, ignore_errors=True)
work.mkdir()
data = write_titles(work / "train.jsonl", rows_per_category=25)
base = {
    "data.train": str(data),
    "data.cache_dir": str(work / "cache"),
    "data.validation_size": 0.2,
    "data.test_size": 0.2,
    "tracking.enabled": False,
    "training.progress": False,
    "training.epochs": 3,
    "training.batch_size": 16,
    "training.lr": 0.05,
}
word = {"model.embedding_dim": 8, "model.hidden_layers": []}
FAMILIES = {
    "mlp": {"model.family": "mlp", **word},
    "mlp-ngrams": {
        "model.family": "mlp",
        **word,
        "model.char_ngram_buckets": 64,
        "model.ngram_buckets": 32,
    },
    "cnn": {"model.family": "cnn", **word, "model.num_filters": 4, "model.filters_length": [1, 2]},
    "lstm": {"model.family": "lstm", **word, "model.hidden_size": 4},
    "gru": {"model.family": "gru", **word, "model.hidden_size": 4, "model.bidirectional": False},
    "linear": {
        "model.family": "linear",
        "model.embedding_dim": 8,
        "model.char_ngram_buckets": 64,
        "model.ngram_buckets": 32,
    },
    "linear-full-rank": {
        "model.family": "linear",
        "model.full_rank": True,
        "model.char_ngram_buckets": 64,
        "model.ngram_buckets": 32,
        "training.loss": "squared_hinge",
        "training.optimizer": "adagrad",
    },
    "encoder": {"model.family": "encoder", "model.encoder": "minilm", "training.lr": 0.01},
    "transformer": {
        "model.family": "transformer",
        "model.model_path": str(make_tiny_bert(work / "tiny-bert")),
        "training.lr": 0.01,
        "training.epochs": 1,
    },
    "ensemble": {
        "model.family": "ensemble",
        "model.members": [
            {"family": "mlp", "embedding_dim": 8, "hidden_layers": []},
            {
                "family": "cnn",
                "embedding_dim": 8,
                "hidden_layers": [],
                "num_filters": 4,
                "filters_length": [1],
            },
        ],
    },
}
TITLES = [
    "Placa De Sonido Behringer",
    "Lavarropas Drean Automatico",
    "Disco De Freno Fremax",
    "Mochila Maternal Bolso",
    "Interfaz Audio Focusrite",
    "zzz desconocido",
]
expected = {}
for name, settings in FAMILIES.items():
    cfg = build_config(overrides={**base, **settings})
    folder = out / name
    run(cfg, folder)
    keep = {"manifest.json", *json.loads((folder / "manifest.json").read_text())["files"]}
    for f in sorted(folder.rglob("*"), reverse=True):
        rel = f.relative_to(folder).as_posix()
        if f.is_file() and rel not in keep and not rel.endswith("/manifest.json"):
            f.unlink()
        elif f.is_dir() and not any(f.iterdir()):
            f.rmdir()
    clf = Classifier.load(folder)
    top = clf.predict_top_k(TITLES, 2)
    expected[name] = [[[c, round(float(p), 6)] for c, p in row] for row in top]
    print(name, [r[0] for r in top])
(out / "expected.json").write_text(
    json.dumps({"titles": TITLES, "predictions": expected}, indent=1, ensure_ascii=False) + "\n"
)
