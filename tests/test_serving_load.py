"""`prodcat serve` as a running service: a bounded load test (thousands of requests from 64
concurrent clients, no errors, no growth of the server's memory) and a schemathesis run
against its OpenAPI schema (no 500s, responses as the schema says). Small here;
`benchmarks/serving.py --soak N --fuzz N` runs both at full size."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="needs the serve extra")
pytest.importorskip("fastapi", reason="needs the serve extra")

SAMPLE = Path(__file__).resolve().parents[1] / "src/prodcat/resources/meli-es-sample.jsonl.gz"
BLOCK = 1000  # requests between two readings of the server's memory


def sample_titles(count: int = 2000) -> list[str]:
    """Real titles: the bundled sample's first `count`."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        return [json.loads(line)["title"] for _, line in zip(range(count), f)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServeProcess:
    """`prodcat serve MODEL ARGS` in a subprocess on a free loopback port, until `stop()`."""

    def __init__(self, model: Path, args: list[str], log: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w", encoding="utf-8") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prodcat.cli.main", "serve", str(model)]
                + ["--port", str(self.port), "--no-access-log", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text(encoding='utf-8')}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start in 120 s")
            time.sleep(0.2)

    @property
    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request_body(i: int, titles: list[str]) -> tuple[dict, int]:
    """The i-th request of a load test and the status it must get: mostly lists of 1 to 8
    real titles with top_k 1 to 3, some single titles, and a bad request in every ten."""
    if i % 10 == 9:
        return {"titles": ["   "]}, 422
    start = (i * 7) % (len(titles) - 8)
    if i % 4 == 0:
        return {"title": titles[start]}, 200
    return {"titles": titles[start : start + 1 + i % 8], "top_k": 1 + i % 3}, 200


async def soak_async(server: ServeProcess, titles, requests: int, clients: int) -> dict:
    """`requests` requests from `clients` concurrent keep-alive clients, in blocks of BLOCK;
    the server's RSS after each block, statuses, unexpected answers and the rate."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    statuses: Counter[int] = Counter()
    wrong: list[str] = []
    rss = [server.rss]
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:

        async def worker(indices) -> None:
            for i in indices:
                body, expected = request_body(i, titles)
                answer = await client.post("/predict", json=body)
                statuses[answer.status_code] += 1
                if answer.status_code != expected:
                    wrong.append(f"{body} -> {answer.status_code} {answer.text[:200]}")
                elif expected == 200:
                    sent = body.get("titles") or [body["title"]]
                    predictions = answer.json()["predictions"]
                    k = body.get("top_k", 1)
                    if len(predictions) != len(sent) or any(
                        len(p["categories"]) != k for p in predictions
                    ):
                        wrong.append(f"{body} -> {answer.text[:200]}")

        started = time.perf_counter()
        for block_start in range(0, requests, BLOCK):
            block = iter(range(block_start, min(block_start + BLOCK, requests)))
            await asyncio.gather(*(worker(block) for _ in range(clients)))
            rss.append(server.rss)
        elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "clients": clients,
        "seconds": elapsed,
        "requests_per_second": requests / elapsed,
        "statuses": dict(statuses),
        "wrong": wrong,
        "rss_mib": [round(r / 2**20, 2) for r in rss],
    }


def soak(server: ServeProcess, titles: list[str], requests: int, clients: int = 64) -> dict:
    """The load test: see `soak_async`."""
    return asyncio.run(soak_async(server, titles, requests, clients))


def fuzz(base_url: str, max_examples: int, seed: int = 0) -> list[str]:
    """Run schemathesis against the server's OpenAPI schema, every check, positive and
    negative cases; the failures found (empty when none)."""
    with tempfile.TemporaryDirectory() as scratch:  # schemathesis writes .schemathesis/ there
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json"]
            + ["--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed)]
            + ["--no-color", "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=max(60, max_examples),
            cwd=scratch,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
    if done.returncode == 0:
        return []
    return [done.stdout[-4000:] + done.stderr[-2000:]]


@pytest.fixture(scope="module")
def server(small_model, tmp_path_factory):
    serve = ServeProcess(small_model, [], tmp_path_factory.mktemp("serve") / "server.log")
    yield serve
    serve.stop()


def test_3000_requests_from_64_clients_without_errors_or_memory_growth(server):
    titles = sample_titles()
    result = soak(server, titles, requests=3 * BLOCK, clients=64)
    print(json.dumps(result))
    assert result["wrong"] == []
    assert result["statuses"] == {200: 2700, 422: 300}
    first, *_, last = result["rss_mib"][1:]  # after the first and the last thousand
    # Caches and allocator pools fill in the first thousand; a leak of even 1 KiB per
    # request would add 2 MiB over the next two thousand.
    assert last - first < 2.0, result["rss_mib"]
    assert httpx.get(f"{server.base_url}/health").json()["requests"] >= 2700


def test_schemathesis_finds_no_server_error_nor_schema_violation(server):
    failures = fuzz(server.base_url, max_examples=40)
    assert failures == [], failures[0]
