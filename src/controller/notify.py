"""Notifications: tell the customer's channel that a request waits, without ever blocking on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("bgctl.notify")
ATTEMPTS = 4
FIRST_BACKOFF = 0.5


def approval_link(public_url: str, controller_id: str, request_id: str) -> str:
    """The link an approver follows; `bgtui approve` accepts it in place of an id."""
    if public_url:
        return f"{public_url.rstrip('/')}/requests/{request_id}/approve"
    return f"bgtui://{controller_id}/requests/{request_id}/approve"


def request_id_from_link(text: str) -> str:
    """The request id in an approval link, or the text itself when it is already an id."""
    if "/" not in text:
        return text
    parts = [p for p in text.split("?")[0].split("/") if p]
    if len(parts) >= 3 and parts[-1] == "approve" and parts[-3] == "requests":
        return parts[-2]
    return text


class WebhookNotifier:
    """POSTs one JSON message per new request to every configured URL, retrying with backoff.

    Failures are logged and reported through `on_failure` (the controller audits them); they
    never hold up the lifecycle, since delivery runs in background tasks.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        on_failure: Callable[[str, str], None] | None = None,
        backoff: float = FIRST_BACKOFF,
    ) -> None:
        self._urls = urls
        self._on_failure = on_failure
        self._backoff = backoff
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, message: dict[str, Any]) -> None:
        for url in self._urls:
            task = asyncio.create_task(self._deliver(url, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, message: dict[str, Any]) -> None:
        delay = self._backoff
        error = ""
        async with httpx.AsyncClient(timeout=5.0) as client:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    response = await client.post(url, json=message)
                    if response.status_code < 300:
                        return
                    error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("webhook %s attempt %d/%d failed: %s", url, attempt, ATTEMPTS, error)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay *= 2
        log.error("webhook %s gave up after %d attempts: %s", url, ATTEMPTS, error)
        if self._on_failure is not None:
            self._on_failure(url, error)

    async def drain(self, timeout: float = 5.0) -> None:
        """Waits (briefly) for deliveries in flight, e.g. before shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
