"""Dynamic micro-batching: requests that arrive together share one model call.

Each request puts its titles on an asyncio queue and awaits a future. One worker task takes
the first waiting request and every request queued behind it, up to `max_batch` titles; it
runs the model once on all their titles (in a worker thread, so the event loop keeps
accepting requests meanwhile) and hands each request its rows. Requests that arrive while
the model runs form the next batch, so batches grow with the load by themselves.

A batch waits for company (at most `max_wait_ms`) only while other requests are *arriving*:
announced by the app as their handling began (`arriving()`), not yet queued. A lone client
never waits; a burst is gathered. `max_batch=1` gives every request a model call of its own
(micro-batching off).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

# (titles, k) -> (N, k) class ids and (N, k) probabilities, best first: `Classifier.top_k`.
TopK = Callable[[list[str], int], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Request:
    titles: list[str]
    k: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Groups concurrent `top_k` calls into model calls of up to `max_batch` titles.

    `model_calls`, `requests` and `titles` count what it did (tests and /health read them).
    """

    def __init__(self, top_k: TopK, max_batch: int = 256, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
        self._top_k = top_k
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.model_calls = 0
        self.requests = 0
        self.titles = 0
        self._executor: ThreadPoolExecutor | None = None  # one thread runs the model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._held: _Request | None = None  # taken from the queue, but did not fit the batch
        self._arriving = 0  # requests being read and checked, not queued yet

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (being read and checked) until it is queued or
        dropped, so that a forming batch waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    def submit(self, titles: list[str], k: int) -> asyncio.Future:
        """Queue titles; the future gives their `k` best class ids and probabilities."""
        queue = self._started()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Request(titles, k, future))
        return future

    async def top_k(self, titles: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best class ids and probabilities of each title, batched with others."""
        return await self.submit(titles, k)

    def _started(self) -> asyncio.Queue[_Request]:
        # Started on first use, in the loop that serves (a test client may run its own loop).
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._held = None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="prodcat-model")
            self._worker = loop.create_task(self._work(self._queue), name="prodcat-batcher")
        assert self._queue is not None
        return self._queue

    async def close(self) -> None:
        """Stop the worker task and its thread."""
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _work(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        executor = self._executor
        while True:
            batch = await self._gather(queue, loop)
            titles = [title for request in batch for title in request.titles]
            k = max(request.k for request in batch)
            self.model_calls += 1
            self.requests += len(batch)
            self.titles += len(titles)
            try:
                indices, probs = await loop.run_in_executor(executor, self._top_k, titles, k)
            except Exception as e:  # a bug, not bad input: every waiting request hears of it
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(e)
                continue
            start = 0
            for request in batch:
                end = start + len(request.titles)
                if not request.future.done():  # its client may have gone
                    request.future.set_result(
                        (indices[start:end, : request.k], probs[start:end, : request.k])
                    )
                start = end

    async def _gather(
        self, queue: asyncio.Queue[_Request], loop: asyncio.AbstractEventLoop
    ) -> list[_Request]:
        """The next requests to run together: the first waiting one, then those queued
        behind it and those arriving within `max_wait` of it, as many as fit in `max_batch`
        titles."""
        first, self._held = self._held, None
        if first is None:
            first = await queue.get()
        batch, size = [first], len(first.titles)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            if not queue.empty():
                request = queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if self._arriving == 0 or remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if size + len(request.titles) > self.max_batch:
                self._held = request  # it leads the next batch
                break
            batch.append(request)
            size += len(request.titles)
        return batch
