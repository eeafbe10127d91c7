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
from dataclasses import dataclass
from typing import Any, Protocol

from bgtui.client import ControllerClient, View
from bgtui.identity import Identity
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.sshsig import Signer


class ViewCache(Protocol):
    """Where views live between controller answers (the Mirror, or memory)."""

    def save_views(self, views: list[View]) -> None: ...
    def views(self) -> list[View]: ...
    def view(self, rid: str) -> View | None: ...


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
        for view in views:
            self._views[str(view["id"])] = view

    def views(self) -> list[View]:
        return list(self._views.values())

    def view(self, rid: str) -> View | None:
        return self._views.get(rid)


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
        while not self._stop.is_set():
            detail = "the controller closed the event stream"
            try:
                # `_stream` leads with None once the controller has subscribed us, so the
                # re-read below cannot miss a change made between it and the stream.
                for event in self.client._stream():
                    if self._stop.is_set():
                        return
                    if event is None:
                        failures = 0
                        self.on_connection("connected", "")
                        self._snapshot()
                        continue
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
