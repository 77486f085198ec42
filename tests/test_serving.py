"""Serving: `prodcat predict` on files and stdin, the pure-Python tokenizer's parity with
Arrow's, the single-title fast path, and the HTTP API (validation, API key, micro-batching,
a bounded load test, a live uvicorn server)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import time
import unicodedata

import numpy as np
import pytest
import torch

from prodcat import Classifier
from prodcat.config import TokenizerConfig
from prodcat.data.batches import Batch
from prodcat.data.featurizers import TokenFeaturizer
from prodcat.data.python_tokenizer import tokenize_title
from prodcat.data.text import tokenize_to_lists
from prodcat.serving.batcher import MicroBatcher
from prodcat.serving.predict_files import ProgressLine
from tests.test_training import WORDS

try:  # the `serve` extra
    import httpx
    from fastapi.testclient import TestClient

    from prodcat.serving.app import MAX_BODY_BYTES, create_app
except ImportError:
    httpx = None
needs_serve = pytest.mark.skipif(httpx is None, reason="needs the serve extra (fastapi, httpx)")

TITLES = [
    "Placa De Sonido Usb Behringer",
    "Lavarropas Drean 8 Kilos Carga Frontal",
    "Disco De Freno Fremax Ventilado Par",
    "Mochila Maternal Bolso Bebe Pañalero",
    "Interfaz Audio Focusrite",
    "Bolso Cuero",
]


@pytest.fixture(scope="module")
def model_dir(small_model):
    return small_model


@pytest.fixture(scope="module")
def clf(model_dir):
    return Classifier.load(model_dir)


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# --- prodcat predict ---------------------------------------------------------------------


def test_predict_reads_a_challenge_test_file_and_keeps_its_ids(model_dir, clf, tmp_path, run_cli):
    test_csv = tmp_path / "test.csv"
    with open(test_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "language"])
        writer.writerows([100 + i, title, "spanish"] for i, title in enumerate(TITLES * 3))
    out = tmp_path / "predictions.csv"
    code, _, err = run_cli(
        ["predict", str(model_dir), "--input", str(test_csv), "--output", str(out)]
        + ["--top-k", "2", "--batch-size", "4"]
    )
    assert code == 0, err
    rows = read_csv(out.read_text(encoding="utf-8"))
    assert list(rows[0]) == [
        "id",
        "title",
        "category_1",
        "probability_1",
        "category_2",
        "probability_2",
    ]
    assert [r["id"] for r in rows] == [str(100 + i) for i in range(len(TITLES) * 3)]
    assert [r["title"] for r in rows] == TITLES * 3
    assert [r["category_1"] for r in rows] == clf.predict(TITLES * 3)
    expected = clf.predict_top_k(TITLES, 2)
    for row, best in zip(rows, expected):
        assert (row["category_2"], float(row["probability_1"])) == (
            best[1][0],
            pytest.approx(best[0][1], abs=1e-6),
        )
    assert not list(tmp_path.glob(".*.partial"))
    assert err == ""  # no progress line: stderr is not a terminal


def test_progress_line_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = ProgressLine(stream, interval=0)
        progress.update(1000)
        progress.update(2000, final=True)
    assert pipe.getvalue() == ""
    assert terminal.getvalue().startswith("\r1,000 titles ")
    assert "\r2,000 titles " in terminal.getvalue() and "titles/s" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")


def test_predict_reads_stdin_as_lines_csv_or_json_lines(model_dir, clf, monkeypatch, run_cli):
    def stdin(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))

    stdin("\n".join([TITLES[0], "", TITLES[1], TITLES[2]]) + "\n")
    code, out, err = run_cli(["predict", str(model_dir), "-i", "-"])
    assert code == 0, err
    rows = read_csv(out)
    assert [r["line"] for r in rows] == ["1", "3", "4"]  # empty lines skipped, still counted
    assert [r["category_1"] for r in rows] == clf.predict(TITLES[:3])

    stdin('id,title\nA7,Bolso Cuero\nB9,"Placa, Sonido"\n')
    code, out, err = run_cli(["predict", str(model_dir), "-i", "-"])
    assert code == 0, err
    rows = read_csv(out)
    assert [(r["id"], r["title"]) for r in rows] == [("A7", "Bolso Cuero"), ("B9", "Placa, Sonido")]
    assert [r["category_1"] for r in rows] == clf.predict(["Bolso Cuero", "Placa, Sonido"])

    records = [{"id": f"x{i}", "title": t} for i, t in enumerate(TITLES)]
    stdin("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    code, out, err = run_cli(["predict", str(model_dir), "-i", "-", "-f", "jsonl", "--top-k", "3"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    for line, best in zip(lines, clf.predict_top_k(TITLES, 3)):
        assert [c["category"] for c in line["categories"]] == [c for c, _ in best]
        assert [c["probability"] for c in line["categories"]] == pytest.approx(
            [p for _, p in best], abs=1e-6
        )


def test_predict_titles_given_as_arguments(model_dir, clf, run_cli):
    code, out, err = run_cli(["predict", str(model_dir), *TITLES[:2]])
    assert code == 0, err
    rows = read_csv(out)
    assert [(r["line"], r["title"]) for r in rows] == [("1", TITLES[0]), ("2", TITLES[1])]
    assert [r["category_1"] for r in rows] == clf.predict(TITLES[:2])


def test_submission_format_writes_the_challenge_id_category_file(model_dir, clf, tmp_path, run_cli):
    test_csv = tmp_path / "test.csv.gz"
    lines = ["id,title,language"] + [f"{i},{t},spanish" for i, t in enumerate(TITLES)]
    test_csv.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    out = tmp_path / "submission.csv"
    code, _, err = run_cli(
        ["predict", str(model_dir), "-i", str(test_csv), "-o", str(out), "-f", "submission"]
    )
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "id,category"
    rows = read_csv(text)
    assert [r["id"] for r in rows] == [str(i) for i in range(len(TITLES))]
    assert [r["category"] for r in rows] == clf.predict(TITLES)
    assert set(r["category"] for r in rows) <= set(clf.categories)


@pytest.mark.parametrize(
    "args, message",
    [
        (["T", "--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["T", "--top-k", "-1"], "--top-k must be at least 1, got -1"),
        (["T", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["T", "--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
        (["T", "--format", "xml"], "--format must be one of csv, jsonl, submission"),
        ([], "nothing to predict"),
        (["T", "--input", "x.csv"], "give titles or --input, not both"),
        (["--input", "missing.csv"], "missing.csv: no such file"),
        (["T", "-f", "submission"], "needs an 'id' column"),
        (["T", "-f", "submission", "--top-k", "2"], "drop --top-k"),
    ],
)
def test_predict_mistakes_are_one_line_errors(model_dir, run_cli, args, message):
    code, out, err = run_cli(["predict", str(model_dir), *args])
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_predict_error_in_a_process_has_no_traceback(model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "prodcat.cli.main", "predict", str(model_dir), "x", "--top-k", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --top-k must be at least 1, got 0"


# --- the pure-Python tokenizer and the fast path ------------------------------------------

SETTINGS = {
    "default": TokenizerConfig(),
    "course": TokenizerConfig.course(),
    "course, portuguese": TokenizerConfig.course("portuguese"),
    "keep-case-drop-numbers": TokenizerConfig(lowercase=False, numbers="drop", min_token_length=2),
    "keep-accents-and-numbers": TokenizerConfig(strip_accents=False, numbers="keep"),
}


@pytest.mark.parametrize("setting", ["default", "course", "course, portuguese"])
def test_title_tokenizer_matches_arrow_on_real_titles(shared_file, setting):
    with gzip.open(shared_file("meli-es-51k.jsonl.gz"), "rt", encoding="utf-8") as f:
        titles = [json.loads(line)["title"] for line in f]
    cfg = SETTINGS[setting]
    expected = tokenize_to_lists(titles, cfg)
    mismatches = [t for t, e in zip(titles, expected) if tokenize_title(t, cfg) != e]
    assert len(titles) == 50_939 and mismatches == []


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_title_tokenizer_matches_arrow_on_every_bmp_character(setting):
    # Each character this Python knows alone, between letters, next to digits, "Σ" and "İ":
    # separators, case, accents, digits. (Pieces with characters it does not know go to
    # Arrow itself: test_title_tokenizer_edge_cases.)
    chars = [
        chr(c)
        for c in range(0x10000)
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    ]
    titles = [f"a{c}b {c}Σ İ{c}x1 12{c}" for c in chars]
    cfg = SETTINGS[setting]
    expected = tokenize_to_lists(titles, cfg)
    mismatches = [
        hex(ord(c)) for c, t, e in zip(chars, titles, expected) if tokenize_title(t, cfg) != e
    ]
    assert mismatches == []


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_title_tokenizer_edge_cases(setting):
    titles = [
        "",
        "   ",
        "ΣΟΦΟΣ İstanbul ½ ﬁltro",
        "Marca® Hidrolavadora 1700w 120 Bar",
        "a\u00a0b\tc\nd\u2028e\x85f«g»h",
        # unknown to Python 3.11's Unicode 14 tables: a Unicode 15 emoji, a Unicode 16 letter
        "new \U0001fae8 emoji \U0001fae8x \u1c89x Ꟍ\ua7cb",
        "çà 2x1 co\u0301digo",
    ]
    cfg = SETTINGS[setting]
    assert [tokenize_title(t, cfg) for t in titles] == tokenize_to_lists(titles, cfg)


def test_fast_path_gives_the_batch_paths_ids_and_probabilities(clf):
    titles = TITLES + ["", "Ñandú 220v ÁÉÍ", "x " * 100]
    fast_path = clf.featurizer.title_encoder()  # what the featurizer takes for a few titles
    arrow = TokenFeaturizer.encode  # the path of many titles, and the cache's
    for title in titles:
        fast = fast_path.encode([title])
        slow = arrow(clf.featurizer, [title])
        assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1]), title
    fast_matrix, fast_lengths = fast_path.encode(titles)
    arrow_matrix, arrow_lengths = arrow(clf.featurizer, titles)
    assert np.array_equal(fast_matrix, arrow_matrix) and np.array_equal(fast_lengths, arrow_lengths)
    with torch.inference_mode():
        batch = Batch(torch.from_numpy(arrow_matrix), torch.from_numpy(arrow_lengths))
        arrow_probs = torch.softmax(clf.model(batch), dim=1).numpy()
    single = np.concatenate([clf.predict_proba(t) for t in titles])
    np.testing.assert_allclose(single, arrow_probs, atol=1e-6)
    assert clf.predict(titles) == [clf.categories[i] for i in arrow_probs.argmax(1)]
    ids, probs = clf.top_k(titles, 2)
    np.testing.assert_allclose(probs, np.sort(arrow_probs, axis=1)[:, ::-1][:, :2], atol=1e-6)
    assert clf.top_k([], 3)[0].shape == (0, 3)


def test_small_batches_use_one_thread_and_restore_the_setting(clf):
    threads = torch.get_num_threads()
    clf.predict(TITLES)
    assert torch.get_num_threads() == threads


# --- the HTTP API ------------------------------------------------------------------------


@pytest.fixture
def client(clf):
    with TestClient(create_app(clf)) as client:
        yield client


@needs_serve
def test_http_predicts_one_title_and_many_like_the_classifier(client, clf):
    one = client.post("/predict", json={"title": TITLES[0]})
    assert one.status_code == 200
    (prediction,) = one.json()["predictions"]
    assert prediction["categories"][0]["category"] == clf.predict(TITLES[0])[0]
    assert len(prediction["categories"]) == 1

    many = client.post("/predict", json={"titles": TITLES, "top_k": 3})
    assert many.status_code == 200
    predictions = many.json()["predictions"]
    for got, best in zip(predictions, clf.predict_top_k(TITLES, 3), strict=True):
        assert [c["category"] for c in got["categories"]] == [c for c, _ in best]
        assert [c["probability"] for c in got["categories"]] == pytest.approx(
            [p for _, p in best], abs=1e-6
        )


@needs_serve
@pytest.mark.parametrize(
    "body, where",
    [
        (b"", ""),
        (b"not json", ""),
        (b'{"title": "Placa \xff\xfe"}', ""),  # not UTF-8
        (b'{"title": "\\ud800"}', ""),  # a lone surrogate
        (b"[]", ""),
        (b"{}", ""),
        (b'{"title": "a", "titles": ["b"]}', ""),
        (b'{"title": ""}', "title"),
        (b'{"title": " \\t "}', "title"),
        (b'{"title": null}', ""),
        (b'{"title": 3}', "title"),
        (b'{"title": ["a"]}', "title"),
        (b'{"titles": "Placa"}', "titles"),
        (b'{"titles": []}', "titles"),
        (b'{"titles": ["ok", "  "]}', "titles.1"),
        (b'{"titles": ["ok", 5]}', "titles.1"),
        (b'{"titles": [["a"]]}', "titles.0"),
        (json.dumps({"title": "a" * 1001}).encode(), "title"),
        (json.dumps({"titles": ["a"] * 1001}).encode(), "titles"),
        (b'{"title": "a", "top_k": 0}', "top_k"),
        (b'{"title": "a", "top_k": 21}', "top_k"),
        (b'{"title": "a", "top_k": "3"}', "top_k"),
        (b'{"title": "a", "top_k": 1.5}', "top_k"),
        (b'{"title": "a", "top_k": true}', "top_k"),
        (b'{"title": "a", "path": "/etc/passwd"}', "path"),
    ],
)
def test_http_bad_input_is_a_4xx_naming_the_field(client, body, where):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    details = response.json()["detail"]
    expected = f"body.{where}" if where else "body"
    assert any(".".join(map(str, d["loc"])) == expected for d in details)
    assert all(d["msg"] for d in details)


@needs_serve
def test_http_oversized_bodies_and_wrong_methods_are_4xx(client):
    huge = b'{"title": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    response = client.post("/predict", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    chunked = client.post("/predict", content=iter([huge[: 1 << 20]] * 9))  # no Content-Length
    assert chunked.status_code == 413
    assert client.get("/predict").status_code == 405
    assert client.post("/predict", content=b'{"title": "a"}').status_code == 200  # no type


@needs_serve
def test_http_api_key(clf):
    with TestClient(create_app(clf, api_key="s3cret")) as client:
        body = {"title": TITLES[0]}
        assert client.post("/predict", json=body).status_code == 401
        wrong = client.post("/predict", json=body, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
        assert client.get("/model").status_code == 401
        assert (
            client.post("/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        )
        assert client.get("/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200  # for load balancers: no key


@needs_serve
def test_http_model_and_health(client, clf, model_dir):
    info = client.get("/model").json()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert info["family"] == "mlp"
    assert info["classes"] == len(WORDS) and info["categories"] == clf.categories
    assert info["metrics"]["test"] == metrics["test"]
    assert "output_dir" not in info["metrics"]  # no server paths for clients
    assert info["training_data"]["train"] == {"file": "train.jsonl", "rows": metrics["train_rows"]}
    assert info["prodcat_version"]
    client.post("/predict", json={"titles": TITLES})
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["titles"] >= len(TITLES)
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


async def _post_all(app, bodies, concurrency):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        gate = asyncio.Semaphore(concurrency)

        async def post(body):
            async with gate:
                return await client.post("/predict", json=body)

        return await asyncio.wait_for(asyncio.gather(*map(post, bodies)), timeout=120)


@needs_serve
def test_concurrent_requests_share_model_calls(clf):
    app = create_app(clf, max_wait_ms=20)
    bodies = [{"titles": [TITLES[i % len(TITLES)]], "top_k": 1 + i % 3} for i in range(32)]
    responses = asyncio.run(_post_all(app, bodies, concurrency=32))
    assert [r.status_code for r in responses] == [200] * 32
    batcher = app.state.batcher
    assert batcher.requests == 32 and batcher.model_calls < 32
    for body, response in zip(bodies, responses):
        best = clf.predict_top_k(body["titles"], body["top_k"])[0]
        got = response.json()["predictions"][0]["categories"]
        assert [c["category"] for c in got] == [c for c, _ in best]


def test_batcher_keeps_to_max_batch_and_routes_rows_back(clf):
    sizes = []

    def top_k(titles, k):
        sizes.append(len(titles))
        return clf.top_k(titles, k)

    batcher = MicroBatcher(top_k, max_batch=16, max_wait_ms=20)
    requests = [[TITLES[(i + j) % len(TITLES)] for j in range(1 + i % 5)] for i in range(30)]

    async def run():
        try:
            return await asyncio.gather(*(batcher.top_k(r, 2) for r in requests))
        finally:
            await batcher.close()

    results = asyncio.run(run())
    assert sum(sizes) == sum(map(len, requests)) and max(sizes) <= 16
    assert len(sizes) < len(requests)
    for titles, (ids, probs) in zip(requests, results):
        expected_ids, expected_probs = clf.top_k(titles, 2)
        assert np.array_equal(ids, expected_ids)
        np.testing.assert_allclose(probs, expected_probs, atol=1e-6)


@needs_serve
def test_load_2000_requests_from_32_clients_without_errors(clf):
    app = create_app(clf)
    bodies = [
        {"titles": TITLES[: 1 + i % len(TITLES)]} if i % 4 else {"title": TITLES[i % len(TITLES)]}
        for i in range(2000)
    ]
    started = time.perf_counter()
    responses = asyncio.run(_post_all(app, bodies, concurrency=32))
    elapsed = time.perf_counter() - started
    assert [r.status_code for r in responses] == [200] * 2000
    expected = dict(zip(TITLES, clf.predict(TITLES)))
    for body, response in zip(bodies[:50], responses[:50]):
        titles = body.get("titles") or [body["title"]]
        got = [p["categories"][0]["category"] for p in response.json()["predictions"]]
        assert got == [expected[t] for t in titles]
    assert app.state.batcher.model_calls < 2000
    print(f"2,000 requests in {elapsed:.1f} s, {app.state.batcher.model_calls} model calls")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_serve
def test_prodcat_serve_answers_real_http_requests(model_dir, clf, tmp_path):
    port = _free_port()
    env = {**os.environ, "PRODCAT_API_KEY": "k3y"}
    server = subprocess.Popen(
        [sys.executable, "-m", "prodcat.cli.main", "serve", str(model_dir)]
        + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": "k3y"}) as http:
            answer = http.post("/predict", json={"titles": TITLES, "top_k": 2})
            assert answer.status_code == 200
            got = [p["categories"][0]["category"] for p in answer.json()["predictions"]]
            assert got == clf.predict(TITLES)
            assert http.post("/predict", json={"titles": [""]}).status_code == 422
            assert (
                http.post("/predict", json={"title": "a"}, headers={"X-API-Key": ""}).status_code
                == 401
            )
            assert http.get("/model").json()["classes"] == len(WORDS)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-batch", "0"], "--max-batch must be at least 1, got 0"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be at least 0"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
    ],
)
def test_serve_mistakes_are_one_line_errors(model_dir, run_cli, args, message):
    code, _, err = run_cli(["serve", str(model_dir), *args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_serve_needs_a_model_folder(tmp_path, run_cli):
    code, _, err = run_cli(["serve", str(tmp_path)])
    assert code == 2 and "not a model folder" in err
