"""The auditor's reads of the local mirror, on one dedicated thread (no Textual here).

A `Mirror` is one SQLite connection and must stay on the thread that opened it. Browsing asks
for pages far more often than anything else, so one long-lived thread owns a browsing `Mirror`
(its connection stays warm and its match counts stay cached) and runs the screens' reads in
order. A read handed in under a `kind` ("page", "timeline"…) supersedes any read of the same
kind still waiting: typing a filter quickly runs the newest query only, never a backlog.
Long jobs that write (sync, verify, export) open their own `Mirror` in their own worker thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bgtui.protocol.errors import Refused

if TYPE_CHECKING:
    from bgtui.mirror import AuditFilter, AuditRow, Mirror

T = TypeVar("T")


class NoMirror(Refused):
    """There is no local copy of this controller's audit log yet."""


@dataclass(frozen=True)
class MirrorPlace:
    """Where a controller's audit copy lives: the mirror file and the controller id in it."""

    path: Path
    controller_id: str


@dataclass(frozen=True)
class AuditPage:
    """One page of matching entries, newest first, and how many match in all."""

    offset: int
    rows: list[AuditRow]
    total: int
    held: int  # entries in the local copy, filtered or not

    @property
    def first(self) -> int:
        """1-based number of the first row shown (0 when there is none)."""
        return self.offset + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.rows)


def read_page(mirror: Mirror, offset: int, limit: int, chosen: AuditFilter) -> AuditPage:
    """`limit` rows from `offset` (clamped to the last page) of the entries matching `chosen`."""
    total = mirror.audit_count(chosen)
    if total and offset >= total:
        offset = max(0, (total - 1) // limit * limit)
    rows = mirror.audit_rows(offset, limit, chosen) if total else []
    return AuditPage(max(0, offset), rows, total, mirror.audit_size())


_Job = tuple[str, Callable[["Mirror"], Any], "Future[Any]"]


class MirrorReader:
    """A thread that owns one browsing `Mirror` and runs reads on it, newest of a kind first."""

    def __init__(self, place: MirrorPlace) -> None:
        self.place = place
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._latest: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bgtui-mirror", daemon=True)
        self._thread.start()

    def submit(self, kind: str, read: Callable[[Mirror], T]) -> Future[T]:
        """Runs `read(mirror)` on the mirror's thread; a newer `kind` read cancels this one
        if it has not started yet."""
        future: Future[T] = Future()
        with self._lock:
            self._latest[kind] = future
        self._jobs.put((kind, read, future))
        return future

    def close(self) -> None:
        """Stops the thread after the read in progress (the mirror is closed there)."""
        self._jobs.put(None)

    def _run(self) -> None:
        mirror: Mirror | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                kind, read, future = job
                with self._lock:
                    superseded = self._latest.get(kind) is not future
                if superseded or not future.set_running_or_notify_cancel():
                    future.cancel()
                    continue
                try:
                    if mirror is None:
                        mirror = self._open()
                    future.set_result(read(mirror))
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
        finally:
            if mirror is not None:
                mirror.close()

    def _open(self) -> Mirror:
        from bgtui.mirror import Mirror  # here, off the UI thread: it loads sqlite-utils

        if not self.place.path.exists():
            raise NoMirror(
                f"no local copy of {self.place.controller_id}'s audit log yet "
                f"({self.place.path}); it is made by the first sync with the controller"
            )
        return Mirror(self.place.path, self.place.controller_id)
