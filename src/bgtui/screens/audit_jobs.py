"""The auditor's long jobs on the mirror: sync, verify, export, fetch recordings (no Textual).

Each job is blocking and opens its own `Mirror` (SQLite connections stay on their thread), so
the screens run them in thread workers. Progress goes out through a plain callback; what the
screens show comes back as the typed results below. They follow `bgtui audit` (audit_commands):
sync first when the controller answers, then work on the local copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bgtui.client import ApiRefused, Unreachable
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PublicKey
from bgtui.screens.audit_reader import MirrorPlace, NoMirror

if TYPE_CHECKING:
    from bgtui.client import ControllerClient
    from bgtui.mirror import AuditVerdict, Mirror, SyncResult

Progress = Callable[[str, int, int], None]
"""(phase, done, total): phase is "sync" or "verify"."""


@dataclass(frozen=True)
class SyncReport:
    """A sync that reached the controller: where the copy is and what the sync did."""

    place: MirrorPlace
    result: SyncResult


@dataclass(frozen=True)
class VerifyReport:
    """A verification: the local copy's verdict, and what the sync before it found."""

    place: MirrorPlace
    verdict: AuditVerdict
    synced: SyncResult | None = None
    note: str | None = None  # why no sync happened (offline, refused)
    last_verified: tuple[int, str] | None = None

    @property
    def rewritten(self) -> str | None:
        return self.synced.rewritten if self.synced is not None else None


@dataclass(frozen=True)
class Recordings:
    """A session's recordings: files here (downloaded if need be) and those still missing."""

    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def sync_copy(path: Path, client: ControllerClient, progress: Progress | None = None) -> SyncReport:
    """Copies what the controller added since the last sync into the mirror at `path`.

    Raises `Unreachable` (offline), `ApiRefused` (not allowed the whole log) or `Refused`.
    """
    from bgtui.mirror import Mirror

    info = client.info()
    key = PublicKey.parse(str(info.get("key")), "the controller's key")
    place = MirrorPlace(path, str(info.get("controller_id")))
    with Mirror(place.path, place.controller_id) as mirror:
        result = mirror.sync(
            client, key, (lambda d, t: progress("sync", d, t)) if progress else None
        )
    return SyncReport(place, result)


def _pinned(mirror: Mirror) -> PublicKey:
    key = mirror.controller_key()
    if key is None:
        raise Refused(
            f"the local copy of {mirror.controller_id}'s log has no pinned controller key; "
            "sync with the controller first"
        )
    return key


def _opened(place: MirrorPlace | None) -> Mirror:
    from bgtui.mirror import Mirror

    if place is None or not place.path.exists():
        raise NoMirror(
            "no local copy of the audit log yet; it is made by the first sync with the controller"
        )
    return Mirror(place.path, place.controller_id)


def verify_copy(
    path: Path,
    place: MirrorPlace | None,
    client: ControllerClient | None,
    progress: Progress,
) -> VerifyReport:
    """Syncs when `client` is given and answers, then recomputes the whole local chain."""
    synced: SyncResult | None = None
    note: str | None = None
    if client is None:
        note = "the controller is offline: verifying the local copy only"
    else:
        try:
            report = sync_copy(path, client, progress)
            place, synced = report.place, report.result
        except Unreachable as exc:
            note = f"{exc}; verifying the local copy only"
        except ApiRefused as exc:
            note = f"{exc}; verifying the local copy only"
    with _opened(place) as mirror:
        verdict = mirror.verify(_pinned(mirror), lambda d, t: progress("verify", d, t))
        last = mirror.last_verified()
    assert place is not None  # _opened refused otherwise
    return VerifyReport(place, verdict, synced, note, last)


def export_session(
    place: MirrorPlace | None,
    client: ControllerClient | None,
    session: str,
    out: Path,
    *,
    rewritten: bool,
) -> Path:
    """Writes the session's evidence bundle to `out` (a new or empty directory).

    Online (and the controller's history intact) it first fetches the checkpoint right after
    the session and its recordings, as `bgtui audit export --session` does.
    """
    with _opened(place) as mirror:
        key = _pinned(mirror)
        timeline = mirror.timeline(session)
        if client is not None and timeline and not rewritten:
            try:
                mirror.fetch_checkpoint(client, key, timeline[-1].seq)
                mirror.fetch_recordings(client, session)
            except Unreachable:
                pass  # offline after all: the bundle ends at a checkpoint already held
        return mirror.export_session(session, out, key)


def session_recordings(
    place: MirrorPlace | None, client: ControllerClient | None, session: str
) -> Recordings:
    """The session's recordings as local files, downloading (and checking) missing ones."""
    found = Recordings()
    with _opened(place) as mirror:
        online = client
        for sha256 in mirror.session_recordings(session):
            path = mirror.recording_path(sha256)
            if path is None and online is not None:
                try:
                    path = mirror.save_recording(sha256, online.recording(sha256))
                except Unreachable:
                    online = None
            if path is None:
                found.missing.append(sha256)
            else:
                found.paths.append(path)
    return found
