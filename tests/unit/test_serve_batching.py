"""The dynamic batcher on its own: merging, splitting, deadlines, limits, failures (no model, no HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from feature_unlearn.serve.batching import BatchStats, DynamicBatcher, Outputs
from feature_unlearn.serve.errors import ClosingError, QueueFullError

T = TypeVar("T")


class Recorder:
    """A fake model: row i -> (10 * row, row sum); records each call's batch size."""

    def __init__(self, delay: float = 0.0, fail_on: int = -1) -> None:
        self.sizes: list[int] = []
        self.delay, self.fail_on = delay, fail_on
        self.lock = threading.Lock()

    def __call__(self, items: list[np.ndarray]) -> Outputs:
        z = np.concatenate(items)
        with self.lock:
            self.sizes.append(len(z))
            call = len(self.sizes) - 1
        time.sleep(self.delay)
        if call == self.fail_on:
            raise RuntimeError("model exploded")
        return z * 10, z.sum(axis=1)


def run(batcher: DynamicBatcher, body: Callable[[DynamicBatcher], Awaitable[T]]) -> T:
    async def main() -> T:
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def rows(k: int, tag: int) -> np.ndarray:
    return np.full((k, 3), tag, np.float32) + np.arange(k, dtype=np.float32)[:, None] / 100


def test_concurrent_requests_share_batches_and_get_their_own_rows_back() -> None:
    model = Recorder(delay=0.01)
    observed: list[int] = []
    batcher = DynamicBatcher(model, max_batch=8, max_delay_s=0.05, stats=BatchStats(on_batch=observed.append))
    sizes = [1, 3, 2, 4, 1, 2, 3, 1, 2, 1]
    inputs = [rows(k, tag) for tag, k in enumerate(sizes)]

    async def body(b: DynamicBatcher) -> list[Outputs]:
        return list(await asyncio.gather(*(b.submit(z) for z in inputs)))

    results = run(batcher, body)
    for z, (scaled, sums) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(scaled, z * 10)  # exactly its own rows, in order
        np.testing.assert_array_equal(sums, z.sum(axis=1))
    assert sum(model.sizes) == sum(sizes) and max(model.sizes) <= 8
    assert model.sizes == [6, 7, 7]  # oldest first, as many whole requests as fit in 8: 1+3+2 | 4+1+2 | 3+1+2+1
    assert observed == model.sizes


def test_a_lone_request_waits_at_most_max_delay() -> None:
    model = Recorder()

    async def body(b: DynamicBatcher) -> float:
        t = time.perf_counter()
        await b.submit(rows(1, 0))
        return time.perf_counter() - t

    waited = run(DynamicBatcher(model, max_batch=64, max_delay_s=0.05), body)
    assert 0.04 <= waited < 1.0 and model.sizes == [1]
    # A full batch does not wait for the deadline.
    waited = run(DynamicBatcher(Recorder(), max_batch=4, max_delay_s=10.0), lambda b: _timed(b.submit(rows(4, 0))))
    assert waited < 1.0


async def _timed(coro: Awaitable[Any]) -> float:
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


def test_oversized_request_runs_alone() -> None:
    model = Recorder()

    async def body(b: DynamicBatcher) -> None:
        small, big = await asyncio.gather(b.submit(rows(2, 1)), b.submit(rows(10, 2)))
        np.testing.assert_array_equal(big[0], rows(10, 2) * 10)
        np.testing.assert_array_equal(small[0], rows(2, 1) * 10)

    run(DynamicBatcher(model, max_batch=4, max_delay_s=0.01), body)
    assert sorted(model.sizes) == [2, 10]


def test_queue_limit_and_failures_do_not_stop_the_batcher() -> None:
    model = Recorder(delay=0.05, fail_on=0)

    async def body(b: DynamicBatcher) -> None:
        first = asyncio.ensure_future(b.submit(rows(4, 0)))  # runs alone and fails
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="more than 6 images are waiting"):
            await asyncio.gather(b.submit(rows(4, 1)), b.submit(rows(4, 2)))
        with pytest.raises(RuntimeError, match="model exploded"):
            await first
        out = await b.submit(rows(2, 3))  # still serving
        np.testing.assert_array_equal(out[0], rows(2, 3) * 10)

    run(DynamicBatcher(model, max_batch=4, max_delay_s=0.0, max_queue=6), body)


def test_abandoned_requests_are_skipped_and_stop_fails_the_rest() -> None:
    model = Recorder(delay=0.2)

    async def body(b: DynamicBatcher) -> None:
        running = asyncio.ensure_future(b.submit(rows(1, 0)))
        await asyncio.sleep(0.05)  # the model is busy with it
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.submit(rows(1, 1)), 0.01)  # gives up while queued
        await running
        await asyncio.sleep(0.05)
        assert model.sizes == [1]  # the abandoned request never reached the model
        waiting = asyncio.ensure_future(b.submit(rows(1, 2)))
        await asyncio.sleep(0)
        await b.stop()
        with pytest.raises(ClosingError):
            await waiting
        with pytest.raises(ClosingError):
            await b.submit(rows(1, 3))

    run(DynamicBatcher(model, max_batch=4, max_delay_s=0.0), body)
