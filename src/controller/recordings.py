"""Session recordings and audit reads for clients: what `GET /v1/audit…` and `…/recordings` serve.

A recording is an asciicast v2 file an operator's client uploads for its session. It is stored
once by content, `<home>/recordings/<rid>/<sha256>.cast` (mode 0600), and its upload is an audit
entry `recording.uploaded` {sha256, bytes}: the audit log is the list of recordings, so the
chain covers which recordings exist and exactly what bytes they hold.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bgtui.protocol.errors import Refused
from bgtui.protocol.objects import Signed
from controller.store import read_snapshot

MAX_RECORDING = 16 * 1024 * 1024
RECORDING_GRACE = 600
"""Seconds after a session ended during which its operator may still upload recordings."""
MAX_PAGE = 5000
SHA256 = re.compile(r"[0-9a-f]{64}")


def asciicast_problem(data: bytes) -> str:
    """Why `data` is not an asciicast v2 file (header object, then [time, code, data] lines)."""
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if not lines:
        return "empty"
    try:
        header = json.loads(lines[0])
    except ValueError:
        return "line 1 is not a JSON header"
    if not isinstance(header, dict) or header.get("version") != 2:
        return "line 1 is not an asciicast v2 header ({'version': 2, …})"
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
        if (
            not isinstance(event, list)
            or len(event) != 3
            or not isinstance(event[0], int | float)
            or not isinstance(event[1], str)
            or not isinstance(event[2], str)
        ):
            return f"line {number} is not an event [time, code, data]"
    return ""


class RecordingFiles:
    """The recordings directory of a controller home."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rid: str, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256) or "/" in rid or rid.startswith("."):
            raise Refused(f"bad recording name {rid}/{sha256}")
        return self.root / rid / f"{sha256}.cast"

    def save(self, rid: str, sha256: str, data: bytes) -> Path:
        """Writes the file in one step (a reader never sees half), private to the controller."""
        path = self.path(rid, sha256)
        for directory in (self.root, path.parent):
            directory.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read(self, rid: str, sha256: str) -> bytes:
        return self.path(rid, sha256).read_bytes()


class AuditReader:
    """Read-only queries over the audit tables, paged; entries go out as their exact text."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _size(self) -> int:
        row = self.db.conn.execute("SELECT max(seq) FROM audit_entries").fetchone()
        return int(row[0] or 0)

    def page(self, after: int, limit: int, session: str | None = None) -> dict[str, Any]:
        """Entries with seq > `after` in order (only `session`'s when given) and the log size."""
        limit = max(1, min(limit, MAX_PAGE))
        with read_snapshot(self.db):
            if session is None:
                rows = self.db.conn.execute(
                    "SELECT seq, entry, prev_hash, hash FROM audit_entries"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                ).fetchall()
            else:
                rows = self.db.conn.execute(
                    "SELECT seq, entry, prev_hash, hash FROM audit_entries"
                    " WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (session, after, limit),
                ).fetchall()
            size = self._size()
        return {
            "entries": [
                {
                    "seq": seq,
                    # Canonical JSON is UTF-8; a damaged entry still goes out (replaced bytes
                    # make its hash fail on the client, which is what should happen).
                    "entry": bytes(entry).decode("utf-8", "replace"),
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
                for seq, entry, prev_hash, digest in rows
            ],
            "size": size,
        }

    def checkpoints(self, after_size: int, limit: int) -> list[dict[str, Any]]:
        """Signed checkpoints covering more than `after_size` entries, smallest first."""
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.db.conn.execute(
            "SELECT size, head, payload, signature FROM audit_checkpoints"
            " WHERE size > ? ORDER BY size, id LIMIT ?",
            (after_size, limit),
        ).fetchall()
        return [_checkpoint(*row) for row in rows]

    def head(self) -> dict[str, Any] | None:
        """The newest signed checkpoint."""
        row = self.db.conn.execute(
            "SELECT size, head, payload, signature FROM audit_checkpoints"
            " ORDER BY size DESC, id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _checkpoint(*row)

    def recordings(self, rid: str) -> list[dict[str, Any]]:
        """The session's uploaded recordings, as its audit entries record them."""
        rows = self.db.conn.execute(
            "SELECT at, entry FROM audit_entries"
            " WHERE session = ? AND event = 'recording.uploaded' ORDER BY seq",
            (rid,),
        ).fetchall()
        found = []
        for at, entry in rows:
            data = json.loads(bytes(entry))["data"]
            found.append({"sha256": data["sha256"], "bytes": data["bytes"], "at": at})
        return found

    def recording_session(self, sha256: str) -> str | None:
        """The session a recording was uploaded for, from its audit entry."""
        row = self.db.conn.execute(
            "SELECT session FROM audit_entries WHERE event = 'recording.uploaded'"
            " AND json_extract(CAST(entry AS TEXT), '$.data.sha256') = ? ORDER BY seq LIMIT 1",
            (sha256,),
        ).fetchone()
        return None if row is None else str(row[0])


def _checkpoint(size: int, head: str, payload: bytes, signature: str) -> dict[str, Any]:
    return {
        "size": size,
        "head": head,
        "checkpoint": Signed(bytes(payload), signature).to_json(),
    }
