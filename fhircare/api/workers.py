"""Blocking work of the FHIR routes (store commits that wait for an fsync, searches, Bundles)
in worker threads, off the event loop.

A plain `ThreadPoolExecutor` (its queue is C code) costs less per request than Starlette's
`run_in_threadpool` (anyio: a cancel scope, a capacity limiter and a Condition-based queue
per call). The request's context variables (negotiated format, request id) go with it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Few threads: under the GIL more CPU-bound threads only take turns (and cost switches);
# threads are here so writers can wait for a shared fsync without holding up the loop.
WORKERS = 8
# With several worker processes on one store, a create also waits for the cross-process
# write lock; more threads let more commits queue behind it and go in one writer's turn
# (measured: 32 clients, two workers, p99 about a fifth lower; one process was slower).
GROUP_WORKERS = 32
_executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fhircare-worker")


def use_threads(count: int) -> None:
    """Give the blocking work `count` threads (a worker process of `serve --workers`, before
    it serves its first request)."""
    global _executor
    old, _executor = _executor, ThreadPoolExecutor(
        max_workers=count, thread_name_prefix="fhircare-worker"
    )
    old.shutdown(wait=False)


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread, with the caller's context variables."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(_executor, context.run, fn, *args)
