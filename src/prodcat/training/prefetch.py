"""Batches built by a background thread while the model works on the current one.

Reading a batch from the memory-mapped cache (gather the rows, cut to the longest title,
remap ids) is numpy work that mostly releases the GIL, so a thread overlaps it with the
forward and backward passes. On CUDA the thread also pins the batch's memory, so the copy
to the GPU is asynchronous (`non_blocking`). `Prefetcher.wait_seconds` is the time the
loop spent waiting for a batch: the share of step time the data pipeline costs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from prodcat.data.batches import Batch

_DONE = object()


class Prefetcher:
    """Iterate `batches` `depth` ahead in a thread (in the caller's thread if `depth` is 0)."""

    def __init__(self, batches: Iterator[Batch], depth: int, pin_memory: bool = False):
        self.batches = batches
        self.depth = depth
        self.pin_memory = pin_memory
        self.wait_seconds = 0.0
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None

    def _prepare(self, batch: Batch) -> Batch:
        return batch.pin_memory() if self.pin_memory else batch

    def _produce(self) -> None:
        try:
            for batch in self.batches:
                item = self._prepare(batch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            item = _DONE
        except BaseException as e:  # raised again in the loop's thread
            item = e
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Batch]:
        if self.depth == 0:
            yield from self._inline()
            return
        self._thread = threading.Thread(target=self._produce, name="prefetch", daemon=True)
        self._thread.start()
        try:
            while True:
                started = time.perf_counter()
                item = self._queue.get()
                self.wait_seconds += time.perf_counter() - started
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def _inline(self) -> Iterator[Batch]:
        iterator = iter(self.batches)
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            if batch is not None:
                batch = self._prepare(batch)
            self.wait_seconds += time.perf_counter() - started
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        """Stop the thread (a loop that ends early, e.g. interrupted, leaves none behind)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
