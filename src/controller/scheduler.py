"""Deadlines: one task that sleeps until the earliest one and fires every deadline then due.

Expiry is the controller's job, not the client's: with thousands of active sessions a heap and a
single sleeping task keeps the cost per wake-up proportional to what is due, and firing all due
deadlines in one batch lets teardown start for all of them within the same second.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

Fire = Callable[[list[tuple[str, str]]], Awaitable[None]]


class DeadlineScheduler:
    """Keeps (when, kind, key) deadlines and calls `fire` with every batch that comes due."""

    def __init__(self, fire: Fire, clock: Callable[[], datetime] | None = None) -> None:
        self._fire = fire
        self._clock = clock or (lambda: datetime.now(UTC))
        self._heap: list[tuple[float, int, str, str]] = []
        self._live: dict[tuple[str, str], float] = {}
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deadline-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(self, kind: str, key: str, when: datetime) -> None:
        stamp = when.timestamp()
        self._live[(kind, key)] = stamp
        heapq.heappush(self._heap, (stamp, next(self._counter), kind, key))
        self._wake.set()

    def cancel(self, kind: str, key: str) -> None:
        self._live.pop((kind, key), None)  # the heap entry is skipped when it surfaces

    def pending(self) -> int:
        return len(self._live)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock().timestamp() if self._heap else 0.0
            due: list[tuple[str, str]] = []
            while self._heap and self._heap[0][0] <= now:
                stamp, _, kind, key = heapq.heappop(self._heap)
                if self._live.get((kind, key)) == stamp:
                    del self._live[(kind, key)]
                    due.append((kind, key))
            if due:
                await self._fire(due)
                continue
            timeout = (self._heap[0][0] - now) if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
