"""The operator's session actions, shared by the requests list and the session screen."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.binding import Binding, BindingType

from bgtui.client import ControllerClient, View
from bgtui.protocol.errors import Refused
from bgtui.recording import describe, upload_pending
from bgtui.screens.common import CONNECTABLE_KINDS, is_final
from bgtui.screens.modals import ConfirmScreen, PathScreen
from bgtui.sealing import Credential, credential_json, open_sealed, write_private
from bgtui.session_keys import session_key
from bgtui.shell import ShellSession

if TYPE_CHECKING:
    from bgtui.app import BgtuiApp

SESSION_BINDINGS: list[BindingType] = [
    Binding("w", "withdraw", "Withdraw", id="withdraw", tooltip="Withdraw the pending request."),
    Binding("c", "connect", "Connect", id="connect", tooltip="Open the session's shell."),
    Binding("e", "end", "End", id="end", tooltip="End the session now; everything is torn down."),
    Binding(
        "f",
        "save_credentials",
        "Creds to file",
        id="save-credentials",
        tooltip="Write the session's credential to a new 0600 file.",
    ),
]


def action_allowed(action: str, view: View | None, resource: dict[str, Any] | None) -> bool:
    """Whether `action` applies to `view` in its current state."""
    if view is None:
        return False
    state = view.get("state")
    if action == "withdraw":
        return state == "pending"
    if action == "end":
        return state in ("activating", "active")
    if action == "connect":
        kind = (resource or {}).get("kind")
        return state == "active" and kind in CONNECTABLE_KINDS
    if action == "save_credentials":
        return state == "active" and bool(view.get("has_credential"))
    return True


def _credential(app: BgtuiApp, client: ControllerClient, rid: str) -> Credential | None:
    answer = client.credentials(rid)
    sealed = answer.get("sealed")
    if sealed is None:
        return None
    if app.key is None:
        raise Refused(
            "this identity's key is in ssh-agent, which cannot open a sealed credential; "
            "use a file, env or command key source"
        )
    return open_sealed(str(sealed), app.key)


def withdraw(app: BgtuiApp, rid: str) -> None:
    app.call(f"withdrew {rid}", lambda c: c.withdraw(rid))


def end(app: BgtuiApp, rid: str) -> None:
    def confirmed(yes: bool | None) -> None:
        if yes:
            app.call(f"ended {rid}", lambda c: c.end(rid))

    app.push_screen(
        ConfirmScreen(f"End session {rid} now? Everything minted is torn down."), confirmed
    )


def save_credentials(app: BgtuiApp, rid: str) -> None:
    def chosen(path: Path | None) -> None:
        if path is None:
            return

        def fetch(client: ControllerClient) -> View | None:
            credential = _credential(app, client, rid)
            if credential is None:
                raise Refused("this session's credential is out of band: break glass supplies none")
            write_private(path, credential_json(credential))
            return None

        app.call(f"wrote the credential to {path} (mode 0600)", fetch)

    app.push_screen(PathScreen("Write the credential to", f"./bgtui-{rid}.json"), chosen)


def connect(app: BgtuiApp, rid: str, resource: dict[str, Any] | None) -> None:
    """Fetches and opens the credential off the UI thread, then hands over the terminal."""
    client = app.client
    if client is None:
        app.notify("not connected", severity="warning")
        return
    kind = str((resource or {}).get("kind") or "service")
    address = str((resource or {}).get("address") or "")

    def fetch() -> None:
        try:
            credential = _credential(app, client, rid)
            key = session_key(app.key, rid) if kind == "ssh" and app.key is not None else None
        except Refused as exc:
            app.call_from_thread(app.notify, str(exc), title="connect refused", severity="error")
            return
        app.call_from_thread(_hand_over, app, client, rid, kind, address, credential, key)

    app.run_worker(fetch, thread=True, group="connect", exclusive=True, exit_on_error=False)


def _hand_over(
    app: BgtuiApp,
    client: ControllerClient,
    rid: str,
    kind: str,
    address: str,
    credential: Any,
    key: Any,
) -> None:
    session = ShellSession(rid, kind, address, credential, key, threading.Event())
    session.record_home = app.settings.home.path  # an SSH shell is recorded there
    app.open_sessions[rid] = session
    view = app.view(rid)
    if view is not None and (is_final(view) or view.get("state") == "ending"):
        session.ended_reason = str(view.get("ended_reason") or view.get("state"))
        session.ended.set()
    try:
        outcome = app.shell_launcher.launch(app, session)
    finally:
        app.open_sessions.pop(rid, None)
    message = outcome.message
    if session.ended.is_set() and session.ended_reason:
        message += f" ({session.ended_reason})"
    # 10 s, not the default 5: the terminal was just handed back and the eye is still on it.
    app.notify(
        message, title="connect", severity="information" if outcome.ran else "warning", timeout=10
    )
    if outcome.recording is not None:
        _upload_recordings(app, client, outcome.recording)


def _upload_recordings(app: BgtuiApp, client: ControllerClient, first: Path) -> None:
    """Uploads the shell's recording (then any left from before) off the UI thread, and tells
    the operator each one's SHA-256, or where it was kept and why."""
    home = app.settings.home.path

    def upload() -> None:
        for done in upload_pending(client.upload_recording, home, first):
            severity = "information" if done.uploaded else "warning" if done.retry else "error"
            app.call_from_thread(
                app.notify, describe(done), title="recording", severity=severity, timeout=30
            )

    app.run_worker(upload, thread=True, group="recording", exit_on_error=False)
