"""Live updates: an in-process broker that keeps each subscriber's newest event per request.

An event stream carries state, not history: if a subscriber falls behind while a thousand
sessions expire at once, it gets each session's latest view once instead of every step, so no
subscriber has to be cut off and memory stays bounded by the number of requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
MAX_PENDING = 100_000  # distinct requests a stalled subscriber may have waiting


def _key(event: Event) -> str:
    request = event.get("request")
    return str(request.get("id")) if isinstance(request, dict) else str(id(event))


@dataclass(eq=False)
class Subscription:
    """One listener (an SSE stream); `accepts` decides which events it may see."""

    accepts: Callable[[Event], bool]
    pending: dict[str, Event] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def offer(self, event: Event) -> None:
        key = _key(event)
        self.pending.pop(key, None)  # re-insert so the order is that of the newest change
        self.pending[key] = event
        if len(self.pending) > MAX_PENDING:
            self.close()
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.ready.set()

    async def next_batch(self, timeout: float) -> list[Event] | None:
        """Events waiting (oldest change first), [] on timeout, None once closed."""
        if not self.pending and not self.closed:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return []
        if self.closed:
            return None
        self.ready.clear()
        batch = list(self.pending.values())
        self.pending.clear()
        return batch


class EventBroker:
    """Fans each lifecycle event out to every subscriber allowed to see it."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(self, accepts: Callable[[Event], bool]) -> Subscription:
        sub = Subscription(accepts)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            if sub.closed:
                self._subscribers.discard(sub)
            elif sub.accepts(event):
                sub.offer(event)

    def close(self) -> None:
        """Ends every stream (on shutdown)."""
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
