"""The TUI's link to the controller, without Textual: view cache, opening keys, events.

`EventFollower` runs the controller's event stream in a daemon thread. It is not a Textual
thread worker on purpose: a blocked read on the stream cannot be interrupted (the controller
sends a keepalive only every 15 s), and Textual waits for its worker threads when the app
exits. The follower hands everything back through callbacks that post Messages, which is
thread-safe; it never touches widgets.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from bgtui.client import ControllerClient, View
from bgtui.identity import Identity
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.sshsig import Signer


class ViewCache(Protocol):
    """Where views live between controller answers (the Mirror, or memory).

    `save_views` never replaces a view with an older one (lower `revision`, see `revision`).
    """

    def save_views(self, views: list[View]) -> None: ...
    def views(self) -> list[View]: ...
    def view(self, rid: str) -> View | None: ...
    def save_catalog(
        self, url: str, resources: list[dict[str, Any]], info: dict[str, Any]
    ) -> None: ...
    def catalog(self) -> tuple[list[dict[str, Any]], dict[str, Any]] | None: ...


def revision(view: View) -> int:
    """The controller's revision of `view` (0 when it has none: older controllers, fixtures).

    Of two views of one request, the one with the higher revision is newer; caches keep it,
    whatever order the two arrived in.
    """
    value = view.get("revision")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def newer_or_same(view: View, held: View | None) -> bool:
    """Whether `view` may replace `held`: it is not older (equal revisions replace)."""
    return held is None or revision(view) >= revision(held)


class MemoryCache:
    """Views, catalog and controller info in memory; seeded for snapshots and offline starts."""

    def __init__(
        self,
        views: Iterable[View] = (),
        resources: list[dict[str, Any]] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self._views: dict[str, View] = {str(v["id"]): v for v in views}
        self.resources: list[dict[str, Any]] = list(resources or [])
        self.info: dict[str, Any] = dict(info or {})

    def save_views(self, views: Iterable[View]) -> None:
        """Keeps each view unless a newer one (higher revision) of that request is held."""
        for view in views:
            rid = str(view["id"])
            if newer_or_same(view, self._views.get(rid)):
                self._views[rid] = view

    def seed(self, views: Iterable[View]) -> None:
        """Adds views not held yet: older copies never replace what the controller sent."""
        for view in views:
            self._views.setdefault(str(view["id"]), view)

    def views(self) -> list[View]:
        return list(self._views.values())

    def view(self, rid: str) -> View | None:
        return self._views.get(rid)

    def save_catalog(self, url: str, resources: list[dict[str, Any]], info: dict[str, Any]) -> None:
        self.resources, self.info = list(resources), dict(info)

    def catalog(self) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        return (self.resources, self.info) if self.resources or self.info else None


class ThreadCache:
    """A store (the Mirror) opened, read and written in one thread of its own.

    A SQLite connection belongs to the thread that opened it, and the TUI's event loop must
    not wait on the disk: `open_store(None)` (the store known for this controller, if any) runs
    on first use, in that thread, and so does every call after it. Writes are queued, not
    waited for; reads wait (call them from a worker).

    With no store yet (a first connection), views are held back until the controller's catalog
    names it: `save_catalog` then makes the store with `open_store(controller_id)` and writes
    them. A catalog naming another controller than the open store's switches stores.
    """

    PENDING_LIMIT = 10_000

    def __init__(self, open_store: Callable[[str | None], ViewCache | None]) -> None:
        self._open_store = open_store
        self._store: ViewCache | None = None
        self._opened = False
        self._pending: list[View] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgtui-store")

    def _get(self) -> ViewCache | None:
        if not self._opened:
            self._opened = True
            self._store = self._open_store(None)
        return self._store

    def _save(self, views: list[View]) -> None:
        try:
            store = self._get()
            if store is not None:
                store.save_views(views)
            elif len(self._pending) < self.PENDING_LIMIT:
                self._pending.extend(views)
        except Exception:  # noqa: S110 - the store is a copy: a failed write must not stop the app
            pass

    def _save_catalog(
        self, url: str, resources: list[dict[str, Any]], info: dict[str, Any]
    ) -> None:
        try:
            store = self._get()
            controller_id = str(info.get("controller_id") or "")
            if controller_id and getattr(store, "controller_id", None) != controller_id:
                self._close_store()
                store = self._store = self._open_store(controller_id)
            if store is not None:
                store.save_catalog(url, resources, info)
                if self._pending:
                    store.save_views(self._pending)
                    self._pending = []
        except Exception:  # noqa: S110 - the store is a copy: a failed write must not stop the app
            pass

    def _close_store(self) -> None:
        closing = getattr(self._store, "close", None)
        if callable(closing):
            closing()
        self._store = None

    def save_views(self, views: list[View]) -> None:
        self._thread.submit(self._save, list(views))

    def save_catalog(self, url: str, resources: list[dict[str, Any]], info: dict[str, Any]) -> None:
        self._thread.submit(self._save_catalog, url, list(resources), dict(info))

    def views(self) -> list[View]:
        def read() -> list[View]:
            store = self._get()
            return store.views() if store is not None else []

        return self._thread.submit(read).result()

    def view(self, rid: str) -> View | None:
        def read() -> View | None:
            store = self._get()
            return store.view(rid) if store is not None else None

        return self._thread.submit(read).result()

    def catalog(self) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        def read() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
            store = self._get()
            return store.catalog() if store is not None else None

        return self._thread.submit(read).result()

    def close(self) -> None:
        """Finishes queued writes, then closes the store in its thread."""
        self._thread.submit(self._close_store)
        self._thread.shutdown(wait=True)


@dataclass(frozen=True)
class KeyOpening:
    """The outcome of opening an identity's key: a signer, or why not (maybe: ask again)."""

    key: PrivateKey | None = None
    signer: Signer | None = None
    needs_passphrase: bool = False
    error: str | None = None


def open_identity(identity: Identity, passphrase_env: str, typed: bytes | None) -> KeyOpening:
    """Opens the key: ssh-agent just signs; an encrypted key takes `typed`, else the env var.

    Blocking (a command source runs a process; an encrypted key runs bcrypt): call it off the
    event loop.
    """
    if identity.source.kind == "agent":
        return KeyOpening(signer=identity.signer())
    asked = False
    env_value = os.environ.get(passphrase_env)

    def passphrase() -> bytes | None:
        nonlocal asked
        asked = True
        if typed is not None:
            return typed
        return env_value.encode() if env_value else None

    try:
        key = identity.private_key(passphrase)
    except Refused as exc:
        if asked and (typed is not None or not env_value):
            shown = "wrong passphrase, try again" if typed is not None else None
            return KeyOpening(needs_passphrase=True, error=shown)
        return KeyOpening(error=str(exc))
    return KeyOpening(key=key, signer=key)


class EventFollower:
    """Follows `/v1/events`; on each (re)connect re-reads the catalog and every view."""

    def __init__(
        self,
        client: ControllerClient,
        on_connection: Callable[[str, str], object],
        on_views: Callable[[list[View]], object],
        on_catalog: Callable[[list[dict[str, Any]], dict[str, Any]], object],
        *,
        delays: Sequence[float],
        offline_after: int,
        on_view: Callable[[View], None] | None = None,
    ) -> None:
        self.client = client
        self.on_connection = on_connection
        self.on_views = on_views
        self.on_catalog = on_catalog
        self.on_view = on_view
        self.delays = tuple(delays) or (1.0,)
        self.offline_after = max(1, offline_after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bgtui-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        """Re-reads everything now, in its own thread (the stream thread may be blocked)."""
        threading.Thread(target=self._snapshot, name="bgtui-refresh", daemon=True).start()

    def _snapshot(self) -> None:
        try:
            info = self.client.info()
            resources = self.client.resources()
            views = self.client.list()
        except Refused:
            return
        if self._stop.is_set():
            return
        self.on_catalog(resources, info)
        if views:
            self.on_views(views)

    def _run(self) -> None:
        failures = 0

        def subscribed() -> None:
            # Re-read only once the controller has subscribed us, so no change made between
            # the re-read and the stream is missed.
            nonlocal failures
            if self._stop.is_set():
                return
            failures = 0
            self.on_connection("connected", "")
            self._snapshot()

        while not self._stop.is_set():
            detail = "the controller closed the event stream"
            try:
                for event in self.client.events(on_open=subscribed):
                    if self._stop.is_set():
                        return
                    view = event.get("request")
                    if event.get("type") == "request" and isinstance(view, dict):
                        if self.on_view is not None:
                            self.on_view(view)
                        self.on_views([view])
            except Refused as exc:
                detail = str(exc)
            except Exception as exc:  # a broken stream mid-read: reconnect all the same
                detail = f"event stream broke ({type(exc).__name__})"
            if self._stop.is_set():
                return
            failures += 1
            state = "offline" if failures >= self.offline_after else "reconnecting"
            self.on_connection(state, detail)
            self._stop.wait(self.delays[min(failures, len(self.delays)) - 1])
