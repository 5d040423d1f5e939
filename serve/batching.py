"""Dynamic batching: concurrent requests share one model call, and each gets its own rows back.

``submit(item)`` queues a request (anything with ``len()``: the number of images it asks for) and
waits. One background task takes the oldest requests, in arrival order, until they hold
``max_batch`` images or the oldest has waited ``max_delay_s``, runs ``predict(items)`` in a worker
thread (ONNX Runtime and zlib release the GIL, so the event loop keeps reading requests meanwhile)
and hands every request the slice of each output that belongs to it: ``predict`` returns arrays
whose rows follow the items' order. A request larger than ``max_batch`` runs alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from feature_unlearn.serve.errors import ClosingError, QueueFullError

Outputs = tuple[np.ndarray, ...]  # each indexed by image along axis 0

log = logging.getLogger("serve.batching")


@dataclass
class _Job:
    item: Any
    size: int
    future: asyncio.Future[Outputs]
    queued_at: float


@dataclass
class BatchStats:
    """Hooks for metrics: called with each batch's image count and the number of waiting requests."""

    on_batch: Callable[[int], None] = lambda size: None
    on_depth: Callable[[int], None] = lambda depth: None


@dataclass
class DynamicBatcher:
    predict: Callable[[list[Any]], Outputs]
    max_batch: int = 64
    max_delay_s: float = 0.005
    max_queue: int = 4096  # images
    stats: BatchStats = field(default_factory=BatchStats)
    _pending: deque[_Job] = field(default_factory=deque, init=False)
    _queued: int = field(default=0, init=False)  # images in _pending
    _wake: Optional[asyncio.Event] = field(default=None, init=False)
    _task: Optional[asyncio.Task[None]] = field(default=None, init=False)
    _pool: Optional[ThreadPoolExecutor] = field(default=None, init=False)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="serve-predict")
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name="serve-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(ClosingError())
        self._queued = 0
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def submit(self, item: Sized) -> Outputs:
        """The ``len(item)`` rows of each output that belong to ``item``."""
        if self._task is None or self._task.done() or self._wake is None:
            raise ClosingError()
        size = len(item)
        if self._queued + size > self.max_queue:
            raise QueueFullError(self.max_queue)
        loop = asyncio.get_running_loop()
        job = _Job(item, size, loop.create_future(), loop.time())
        self._pending.append(job)
        self._queued += size
        self.stats.on_depth(len(self._pending))
        if len(self._pending) == 1 or self._queued >= self.max_batch:  # wake an idle batcher, or end a wait
            self._wake.set()
        return await job.future

    async def _run_forever(self) -> None:
        assert self._wake is not None
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            jobs = self._take()
            if jobs:
                await self._run(jobs)

    async def _gather(self) -> None:
        """Wait until max_batch images are queued or the oldest request has waited max_delay_s."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].queued_at + self.max_delay_s
        while self._queued < self.max_batch and (left := deadline - loop.time()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The oldest live requests that fit in one batch (at least one)."""
        jobs: list[_Job] = []
        size = 0
        while self._pending:
            job = self._pending[0]
            if jobs and size + job.size > self.max_batch:
                break
            self._pending.popleft()
            self._queued -= job.size
            if job.future.done():  # the caller gave up (timeout, disconnect)
                continue
            jobs.append(job)
            size += job.size
        self.stats.on_depth(len(self._pending))
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        size = sum(j.size for j in jobs)
        self.stats.on_batch(size)
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._pool, self.predict, [j.item for j in jobs])
        except asyncio.CancelledError:  # stop() while the model runs
            _fail(jobs, ClosingError())
            raise
        except Exception as exc:  # every request of the batch fails with it; the loop goes on
            log.exception("model call failed for a batch of %d images", size)
            _fail(jobs, exc)
            return
        start = 0
        for job in jobs:
            stop = start + job.size
            if not job.future.done():
                job.future.set_result(tuple(out[start:stop] for out in outputs))
            start = stop


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
