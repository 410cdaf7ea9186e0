"""A bounded inference pool: a fixed number of threads and a bounded wait, never an endless queue.

The recognizer is thread-safe (its detector and each stream's adaptation are behind locks, the
networks keep no state), so every thread shares one. A job holds a slot from submission until it
finishes, even when its client has gone: the bound is on work, not on connections.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every worker is busy and the wait queue is full: answer 503 now, the client retries later."""


class WorkerPool:
    def __init__(self, workers: int, queue: int):
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aird-worker")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting."""
        with self._lock:
            return self._in_flight

    def try_submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """Start ``fn(*args)`` on a worker, or raise ``PoolFull`` at once when no slot is free."""
        with self._lock:
            if self._in_flight >= self.capacity:
                raise PoolFull(f"{self._in_flight} requests running or waiting (limit {self.capacity})")
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.try_submit(fn, *args))

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
