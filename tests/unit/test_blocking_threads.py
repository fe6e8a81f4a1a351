"""The blocking work's thread pool: a worker process of `serve --workers` resizes it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fhircare.api import workers


@pytest.fixture
def restore_pool():
    yield
    workers.use_threads(workers.WORKERS)


def _all_at_once(count: int) -> None:
    """`count` blocking calls that each return only once all of them are running."""
    barrier = threading.Barrier(count, timeout=30)

    async def main() -> list[int]:
        return await asyncio.gather(*(workers.run_blocking(barrier.wait) for _ in range(count)))

    asyncio.run(main())


def test_group_pool_runs_that_many_calls_at_once(restore_pool):
    workers.use_threads(workers.GROUP_WORKERS)
    _all_at_once(workers.GROUP_WORKERS)  # with fewer threads the barrier breaks

