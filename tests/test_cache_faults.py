"""The encoded cache under faults, with real processes: a killed `data prepare` leaves nothing
that looks complete, and two processes preparing one file at once share one whole cache."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from prodcat.config import DataConfig
from prodcat.data.cache import encode_file

ROWS = 300_000  # about a second to encode: long enough to be caught in the middle


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    rng = random.Random(0)
    words = [f"palabra{i}" for i in range(5000)]
    path = tmp_path_factory.mktemp("big") / "titles.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("title,category\n")
        for i in range(ROWS):
            f.write(" ".join(rng.choices(words, k=8)) + f",C{i % 20}\n")
    return path


WAIT_THEN_ENCODE = """
import logging, sys, time
from pathlib import Path
from prodcat.config import DataConfig
from prodcat.data.cache import encode_file
logging.basicConfig(level=logging.INFO)
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
print(encode_file(sys.argv[1], DataConfig(), cache_root=sys.argv[2]).folder)
"""


def wait_for(condition, seconds=60.0):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)


def temporary_folders(cache):
    return list(cache.glob(".*.tmp"))


def test_two_processes_preparing_one_file_share_one_whole_cache(big_file, tmp_path):
    cache = tmp_path / "cache"
    go = [tmp_path / "go-a", tmp_path / "go-b"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WAIT_THEN_ENCODE, str(big_file), str(cache), str(flag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in go
    ]
    go[0].touch()
    wait_for(lambda: temporary_folders(cache) if cache.exists() else False)
    go[1].touch()  # the second starts while the first is encoding
    results = [p.communicate(timeout=120) for p in processes]

    for process, (_, err) in zip(processes, results):
        assert process.returncode == 0, err
        assert "Traceback" not in err
    assert results[0][0] == results[1][0]  # the same folder
    assert "waiting for another process" in results[1][1]
    [folder] = [p for p in cache.iterdir() if p.is_dir()]  # one cache, no temporary left
    file = encode_file(big_file, DataConfig(), cache_root=cache)
    assert file.folder == folder and file.n_rows == ROWS
    assert np.array_equal(np.asarray(file.labels[:40]), np.arange(40) % 20)


def test_a_killed_prepare_leaves_no_cache_that_looks_complete(big_file, tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "prodcat", "data", "prepare"]
    process = subprocess.Popen(
        [*command, "--input", str(big_file), "--output", str(cache), "-q"],
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: process.poll() is not None or (cache.exists() and temporary_folders(cache)))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "prepare ended before it could be killed"
    assert not list(cache.glob("*/meta.json"))  # only a temporary folder, never a cache

    file = encode_file(big_file, DataConfig(), cache_root=cache)  # starts over, and cleans up
    assert file.n_rows == ROWS
    assert temporary_folders(cache) == []
