"""Serving speed on real titles: offline titles/s and single-title latency, then the HTTP
API's throughput and latency under concurrent clients, with micro-batching on and off.

    .venv/bin/python benchmarks/serving.py                      # trains a small MLP first
    .venv/bin/python benchmarks/serving.py --model runs/mlp     # or measures a model folder

Without --model, an MLP (configs/mlp.yaml) is trained on ../shared/data/meli-es-51k.jsonl.gz
with tracking off, into --work. Offline, with --threads torch threads (default 1, as training
leaves it): `Classifier.predict` at batch sizes 1, 32 and 1024 next to the path it replaced
(the Arrow tokenizer for every call, torch.no_grad), and one title's latency (p50/p99).
Served: `prodcat serve` in a subprocess on 127.0.0.1, loaded by a keep-alive HTTP/1.1 client
in this process (1, 8 and 64 connections, 1 and 32 titles per request), each run bounded by
--requests and --seconds. The load generator and the server share the machine's cores, so
served numbers are a floor.
Both processes freeze the objects loaded at start-up out of the garbage collector: a full
collection over torch's objects paused the server (and the load generator) ~150 ms, which every
request in flight waited out, and made the p99 at 64 clients look worse with batching.
`--serve-runtime onnx` serves the exported model (written first if missing); `--served-only`
skips the offline part. Results are printed and written to benchmarks/out/serving.json.

    .venv/bin/python benchmarks/serving.py --soak 20000 --fuzz 1000   # at full size

`--soak N`: the suite's load test (tests/test_serving_load.py) at N requests from 64 clients:
statuses, wrong answers and the server's RSS after each thousand; `--fuzz N`: schemathesis over
the OpenAPI schema with N examples per operation, every check. Written to
benchmarks/out/serving-soak.json.

    .venv/bin/python benchmarks/serving.py --runtimes mlp cnn lstm gru   # torch vs ONNX only

`--runtimes` trains each family (configs/<family>.yaml, one epoch on --rows titles: speed does
not depend on accuracy), exports it to ONNX and measures `Classifier` (torch) beside
`OnnxClassifier` (ONNX Runtime, no torch) on the same titles, both on --threads threads:
titles/s at batch sizes 1, 32 and 1024 and one title's p50 latency, with their top-1 agreement.
Written to benchmarks/out/runtimes.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "meli-es-51k.jsonl.gz"


def read_titles(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["title"] for line in f]


def train_model(work: Path) -> Path:
    from prodcat.config import build_config
    from prodcat.workflow import run

    output = work / "mlp"
    cfg = build_config(
        ROOT / "configs" / "mlp.yaml",
        {
            "data.train": str(SHARED),
            "data.cache_dir": str(work / "cache"),
            "tracking.enabled": False,
            "training.progress": False,
        },
    )
    started = time.perf_counter()
    result = run(cfg, output)
    print(
        f"trained {result.family} on {result.train_rows:,} titles in "
        f"{time.perf_counter() - started:.0f} s: test BAC {result.test.balanced_accuracy:.4f}"
    )
    return output


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# --- offline -------------------------------------------------------------------------------


def offline(clf, titles: list[str]) -> dict:
    def before(batch: list[str]) -> list[str]:
        # What Classifier.predict did before the fast path: Arrow every call, no_grad.
        with torch.no_grad():
            ids = clf.model(clf.featurizer(batch)).argmax(1).tolist()
        return [clf.labels.names[i] for i in ids]

    for title in titles[:300]:
        clf.predict(title)
        before([title])
    assert before(titles[:2000]) == clf.predict(titles[:2000]), "the two paths disagree"
    results: dict = {"latency_ms": {}, "titles_per_second": {}}
    one = titles[1000:3000]
    for name, fn in (("before", lambda t: before([t])), ("now", clf.predict)):
        times = []
        for title in one:
            started = time.perf_counter()
            fn(title)
            times.append(time.perf_counter() - started)
        results["latency_ms"][name] = percentiles(times)
    for size in (1, 32, 1024):
        count = 2000 if size == 1 else 16384
        batches = [titles[i : i + size] for i in range(5000, 5000 + count, size)]
        for name, fn in (("before", before), ("now", clf.predict)):
            started = time.perf_counter()
            for batch in batches:
                fn(batch)
            rate = count / (time.perf_counter() - started)
            results["titles_per_second"].setdefault(str(size), {})[name] = rate
    return results


# --- torch vs ONNX Runtime ------------------------------------------------------------------


def train_family(family: str, work: Path, rows: int) -> Path:
    from prodcat.config import build_config
    from prodcat.workflow import run

    output = work / f"{family}-{rows}"
    if (output / "model.safetensors").is_file():
        return output
    cfg = build_config(
        ROOT / "configs" / f"{family}.yaml",
        {
            "data.train": str(SHARED),
            "data.max_rows": rows,
            "data.cache_dir": str(work / "cache"),
            "training.epochs": 1,
            "tracking.enabled": False,
            "training.progress": False,
        },
    )
    run(cfg, output)
    return output


def compare_runtimes(families: list[str], titles: list[str], args) -> dict:
    from prodcat import Classifier
    from prodcat.serving.onnx_export import export_onnx
    from prodcat.serving.onnx_runtime import OnnxClassifier

    results = {}
    for family in families:
        folder = train_family(family, args.work, args.rows)
        export_onnx(folder)
        clfs = {
            "torch": Classifier.load(folder),
            "onnx": OnnxClassifier.load(folder, threads=args.threads),
        }
        check = titles[:2000]
        agree = float(
            np.mean(np.array(clfs["torch"].predict(check)) == clfs["onnx"].predict(check))
        )
        gap = float(
            np.abs(clfs["torch"].predict_proba(check) - clfs["onnx"].predict_proba(check)).max()
        )
        row: dict = {"top1_agreement": agree, "max_probability_gap": gap}
        for name, clf in clfs.items():
            for title in titles[:300]:
                clf.predict(title)
            times = []
            for title in titles[1000:2000]:
                started = time.perf_counter()
                clf.predict(title)
                times.append(time.perf_counter() - started)
            row[f"{name} latency_ms"] = percentiles(times)[0]
            for size in (1, 32, 1024):
                count = 1000 if size == 1 else 8192
                batches = [titles[i : i + size] for i in range(5000, 5000 + count, size)]
                started = time.perf_counter()
                for batch in batches:
                    clf.predict(batch)
                row[f"{name} {size}"] = count / (time.perf_counter() - started)
        results[family] = row
        print(
            f"| {family} | "
            + " | ".join(
                f"{row[f'torch {size}']:,.0f} / {row[f'onnx {size}']:,.0f}"
                for size in (1, 32, 1024)
            )
            + f" | {row['torch latency_ms']:.3f} / {row['onnx latency_ms']:.3f}"
            + f" | {agree:.4f} | {gap:.1e} |",
            flush=True,
        )
    return results


# --- served --------------------------------------------------------------------------------


class Server:
    """`prodcat serve` in a subprocess (the suite's `ServeProcess`), stopped on exit."""

    def __init__(self, model: Path, max_batch: int, log: Path, runtime: str = "torch"):
        self.args = (model, ["--max-batch", str(max_batch), "--runtime", runtime], log)

    def __enter__(self) -> Server:
        sys.path.insert(0, str(ROOT))
        from tests.test_serving_load import ServeProcess

        self.serve = ServeProcess(*self.args)
        self.port = self.serve.port
        return self

    def get(self, path: str) -> dict:
        import httpx

        return httpx.get(f"{self.serve.base_url}{path}", timeout=5).json()

    def __exit__(self, *exc) -> None:
        self.serve.stop()


async def one_client(port: int, bodies, budget: dict, latencies: list, answers: list) -> None:
    """A keep-alive connection sending requests one after another until the budget is spent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget["left"] > 0 and time.perf_counter() < budget["deadline"]:
            budget["left"] -= 1
            body = next(bodies)
            head = (
                "POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            started = time.perf_counter()
            writer.write(head.encode() + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status:
                budget["errors"] += 1
            elif len(answers) < 5:
                answers.append((body, payload))
    finally:
        writer.close()


async def load(port, titles, clients, per_request, requests, seconds) -> dict:
    """`requests` requests (or `seconds` of them) from `clients` concurrent connections."""
    starts = (i % (len(titles) - per_request) for i in itertools.count(0, per_request))
    bodies = (json.dumps({"titles": titles[j : j + per_request]}).encode() for j in starts)
    budget = {"left": requests, "deadline": time.perf_counter() + seconds, "errors": 0}
    latencies: list[float] = []
    answers: list = []
    started = time.perf_counter()
    await asyncio.gather(
        *(one_client(port, bodies, budget, latencies, answers) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return {
        "requests": len(latencies),
        "errors": budget["errors"],
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "titles_per_second": len(latencies) * per_request / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "answers": answers,
    }


def served(model: Path, clf, titles: list[str], args, work: Path) -> dict:
    results: dict = {}
    for mode, max_batch in (("on", 256), ("off", 1)):
        with Server(model, max_batch, work / f"server-{mode}.log", args.serve_runtime) as server:
            for clients in (1, 8, 64):
                for per_request in (1, 32):
                    asyncio.run(load(server.port, titles, clients, per_request, 50, 5.0))  # warm-up
                    calls = server.get("/health")["model_calls"]
                    run = asyncio.run(
                        load(server.port, titles, clients, per_request, args.requests, args.seconds)
                    )
                    run["model_calls"] = server.get("/health")["model_calls"] - calls
                    for body, payload in run.pop("answers"):
                        sent = json.loads(body)["titles"]
                        got = [
                            p["categories"][0]["category"]
                            for p in json.loads(payload)["predictions"]
                        ]
                        assert got == clf.predict(sent), "served answers differ from Classifier"
                    results[f"{mode} {clients} {per_request}"] = run
                    print(
                        f"  batching {mode:>3}, {clients:>2} clients x {per_request:>2} titles: "
                        f"{run['titles_per_second']:>8,.0f} titles/s  p50 {run['p50_ms']:6.2f} ms  "
                        f"p99 {run['p99_ms']:6.2f} ms  ({run['requests']} requests, "
                        f"{run['model_calls']} model calls, {run['errors']} errors)",
                        flush=True,
                    )
    return results


def soak_and_fuzz(model: Path, args) -> None:
    """The suite's load test and schemathesis run (tests/test_serving_load.py) at full size."""
    sys.path.insert(0, str(ROOT))
    from tests.test_serving_load import ServeProcess, fuzz, sample_titles, soak

    gc.collect()
    gc.freeze()
    server = ServeProcess(model, ["--runtime", args.serve_runtime], args.work / "soak.log")
    results: dict = {"model": str(model), "runtime": args.serve_runtime}
    try:
        if args.soak:
            run = soak(server, sample_titles(), args.soak, clients=64)
            rss = run["rss_mib"]
            print(
                f"load test: {run['requests']:,} requests from 64 clients "
                f"in {run['seconds']:.0f} s "
                f"({run['requests_per_second']:,.0f}/s), statuses {run['statuses']}, "
                f"{len(run['wrong'])} wrong; server RSS after each thousand (MiB): "
                f"{', '.join(f'{r:.1f}' for r in rss[1:])}; last - first thousand "
                f"{rss[-1] - rss[1]:+.2f} MiB"
            )
            results["soak"] = run
        if args.fuzz:
            started = time.perf_counter()
            failures = fuzz(server.base_url, args.fuzz)
            seconds = time.perf_counter() - started
            print(
                f"schemathesis, {args.fuzz} examples per operation, every check: "
                f"{'no failures' if not failures else failures[0]} ({seconds:.0f} s)"
            )
            results["fuzz"] = {"max_examples": args.fuzz, "failures": failures, "seconds": seconds}
    finally:
        server.stop()
    out = args.out.with_name("serving-soak.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: train an MLP)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/prodcat-bench-serving"))
    parser.add_argument("--requests", type=int, default=3000, help="most requests per run")
    parser.add_argument("--seconds", type=float, default=4.0, help="longest run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serving.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for the offline part (training sets 1, as configs/mlp.yaml)",
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        metavar="FAMILY",
        help="only compare torch and ONNX Runtime offline, on these families",
    )
    parser.add_argument("--rows", type=int, default=20000, help="training titles, --runtimes")
    parser.add_argument(
        "--serve-runtime", choices=("torch", "onnx"), default="torch", help="prodcat serve's"
    )
    parser.add_argument("--served-only", action="store_true", help="skip the offline part")
    parser.add_argument("--soak", type=int, metavar="N", help="only the load test, N requests")
    parser.add_argument("--fuzz", type=int, metavar="N", help="only schemathesis, N examples")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PRODCAT_CACHE", str(args.work / "cache"))
    if args.runtimes:
        torch.set_num_threads(args.threads)
        titles = read_titles(SHARED)
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.1f}, {args.threads} thread(s) for torch and ONNX Runtime"
        )
        print(
            "| family | titles/s torch / onnx, batch 1 | batch 32 | batch 1024 "
            "| one title p50 ms torch / onnx | top-1 agreement | max prob. gap |"
        )
        print("|---|---|---|---|---|---|---|")
        results = compare_runtimes(args.runtimes, titles, args)
        out = args.out.with_name("runtimes.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"rows": args.rows, "threads": args.threads, **results}, indent=1)
        )
        print(f"\nwritten to {out}")
        return

    from prodcat import Classifier

    model = args.model or train_model(args.work)
    if args.serve_runtime == "onnx" and not (model / "model.onnx").is_file():
        from prodcat.serving.onnx_export import export_onnx

        export_onnx(model)
    if args.soak or args.fuzz:
        soak_and_fuzz(model, args)
        return
    torch.set_num_threads(args.threads)
    clf = Classifier.load(model)
    titles = read_titles(SHARED)
    load_avg = os.getloadavg()[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load {load_avg:.1f}"
    )

    off: dict = {"latency_ms": {}, "titles_per_second": {}}
    if not args.served_only:
        print("offline (Classifier.predict; before = Arrow tokenizer every call, no_grad):")
        off = offline(clf, titles)
        (b50, b99), (n50, n99) = off["latency_ms"]["before"], off["latency_ms"]["now"]
        print(
            f"  one title: before p50 {b50:.3f} ms p99 {b99:.3f} ms | "
            f"now p50 {n50:.3f} ms p99 {n99:.3f} ms | {b50 / n50:.1f}x faster at p50"
        )
        for size, rates in off["titles_per_second"].items():
            print(
                f"  batch {size:>4}: before {rates['before']:>9,.0f} titles/s | "
                f"now {rates['now']:>9,.0f} titles/s | {rates['now'] / rates['before']:.1f}x"
            )

    print(
        f"served (prodcat serve --runtime {args.serve_runtime}, 1 worker; the load generator "
        "shares the cores):"
    )
    gc.collect()
    gc.freeze()  # the load generator's own full collections would stall every client
    web = served(model, clf, titles, args, args.work)
    print()
    print(
        "| clients | titles/request | on: titles/s | on: p50 / p99 ms | off: titles/s "
        "| off: p50 / p99 ms | titles/s on/off | p50 on/off |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for clients in (1, 8, 64):
        for per_request in (1, 32):
            on, off_ = web[f"on {clients} {per_request}"], web[f"off {clients} {per_request}"]
            print(
                f"| {clients} | {per_request} | {on['titles_per_second']:,.0f} | "
                f"{on['p50_ms']:.2f} / {on['p99_ms']:.2f} | {off_['titles_per_second']:,.0f} | "
                f"{off_['p50_ms']:.2f} / {off_['p99_ms']:.2f} | "
                f"{on['titles_per_second'] / off_['titles_per_second']:.2f}x | "
                f"{on['p50_ms'] / off_['p50_ms']:.2f}x |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "load": load_avg,
                "runtime": args.serve_runtime,
                "offline": off,
                "served": web,
                "model": str(model),
            },
            indent=1,
        )
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
