"""Micro-batching across concurrent requests: a bounded queue drained by one worker that
groups texts by (instruction, kind) and runs the model in a worker thread."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFullError(RuntimeError):
    """The request queue is at its limit: the caller should answer 503 with
    ``Retry-After: retry_after`` (seconds)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(RuntimeError):
    """The server is stopping and takes no new work."""


# (texts, instruction, kind, route) -> (unit vectors [n, d], token counts [n]); route None:
# the model's default
EncodeFn = Callable[[list[str], str | None, str, str | None], tuple[np.ndarray, list[int]]]


@dataclass
class _Job:
    texts: list[str]
    instruction: str | None
    kind: str
    future: asyncio.Future = field(repr=False)
    route: str | None = None

    @property
    def group(self) -> tuple[str | None, str, str | None]:
        return (self.instruction, self.kind, self.route)


class MicroBatcher:
    """Collects requests for up to ``max_wait_ms`` (or until ``max_batch_size`` texts),
    then encodes each (instruction, kind, route) group in one call on a single worker
    thread.

    The queue holds at most ``max_queue`` requests; :meth:`submit` raises
    :class:`QueueFullError` beyond that instead of growing without bound, with a
    ``retry_after`` estimated from how fast the worker has been draining the queue.
    """

    # Bounds of the Retry-After estimate, seconds.
    MIN_RETRY_AFTER = 1
    MAX_RETRY_AFTER = 60

    def __init__(
        self,
        encode: EncodeFn,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.encode = encode
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.closing = False
        # Moving average of the model's seconds per request (0 until the first batch).
        self.seconds_per_request = 0.0

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def full(self) -> bool:
        return self._queue is not None and self._queue.full()

    def queue_full_error(self) -> QueueFullError:
        return QueueFullError(
            f"the request queue is full ({self.max_queue} requests); retry later",
            retry_after=self.retry_after(),
        )

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely drained, in
        [MIN_RETRY_AFTER, MAX_RETRY_AFTER]."""
        wait = math.ceil(self.queued * self.seconds_per_request)
        return max(self.MIN_RETRY_AFTER, min(self.MAX_RETRY_AFTER, wait))

    def _record(self, seconds: float, requests: int) -> None:
        per = seconds / max(requests, 1)
        old = self.seconds_per_request
        self.seconds_per_request = per if old == 0 else 0.8 * old + 0.2 * per

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lusifer-model")
        self._worker = asyncio.create_task(self._run(), name="lusifer-batcher")

    async def close(self) -> None:
        """Finish everything queued, then stop the worker."""
        self.closing = True
        if self._queue is not None and self._worker is not None:
            await self._queue.put(None)
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(
        self, texts: list[str], instruction: str | None, kind: str, route: str | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Queue ``texts`` and wait for their unit vectors and token counts."""
        if self.closing or self._queue is None:
            raise ShuttingDownError("the server is shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(texts, instruction, kind, future, route))
        except asyncio.QueueFull:
            raise self.queue_full_error() from None
        return await future

    async def _collect(
        self, queue: asyncio.Queue[_Job | None], first: _Job
    ) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives within ``max_wait`` (up to ``max_batch_size``
        texts); the flag says the stop sentinel was seen."""
        jobs, size = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(queue.get(), remaining)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.texts)
        return jobs, False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None, "start() creates the queue before the worker"
        stop = False
        while not stop:
            first = await queue.get()
            if first is None:
                break
            jobs, stop = await self._collect(queue, first)
            groups: dict[tuple[str | None, str, str | None], list[_Job]] = {}
            for job in jobs:
                if not job.future.done():  # the client may have gone away
                    groups.setdefault(job.group, []).append(job)
            started = time.perf_counter()
            for (instruction, kind, route), members in groups.items():
                texts = [t for job in members for t in job.texts]
                try:
                    vectors, tokens = await loop.run_in_executor(
                        self._executor, self.encode, texts, instruction, kind, route
                    )
                except Exception as err:  # reported to every waiting request
                    for job in members:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                start = 0
                for job in members:
                    end = start + len(job.texts)
                    if not job.future.done():
                        job.future.set_result((vectors[start:end], tokens[start:end]))
                    start = end
            if groups:
                self._record(time.perf_counter() - started, sum(map(len, groups.values())))
        # Drain anything that raced the sentinel, so no request waits forever.
        while not queue.empty():
            leftover = queue.get_nowait()
            if leftover is not None and not leftover.future.done():
                leftover.future.set_exception(ShuttingDownError("the server is shutting down"))
