"""What the client's mirror.db holds: its schema, and the records `Mirror` hands out.

The schema grows only through `MIGRATIONS`; each runs in its own transaction and bumps
`PRAGMA user_version` (as in the controller's store), and a newer mirror is refused untouched.
Entries are stored as their exact canonical text; the columns the filters use are generated
from that text, so they can never disagree with what was hashed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import now_utc, parse_duration, utc_text

_DATE = re.compile(r"\d{4}-\d\d-\d\d")


# -- the records the mirror hands out ---------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What to show of the log; None matches anything. All given fields must match.

    `event` ending in `*` is a prefix (`approval.*`); `since`/`until` take a UTC time, a date
    (`until` a date: that whole day) or a duration ago (`2h`); `text` finds entries holding
    every word given (word prefixes, in any field).
    """

    session: str | None = None
    actor: str | None = None
    event: str | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class AuditRow:
    """One audit entry as stored (parsed from its exact canonical text)."""

    seq: int
    at: str
    event: str
    actor: str
    session: str | None
    data: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class SyncResult:
    """What a sync did. `rewritten` is a loud one-line message when the controller's history
    no longer extends the local copy (which is then left exactly as it was)."""

    fetched: int
    size: int
    verified_size: int
    rewritten: str | None = None


class Broken(Exception):
    def __init__(self, first_bad: int | None, detail: str) -> None:
        super().__init__(detail)
        self.first_bad = first_bad
        self.detail = detail


class Diverged(Exception):
    """The controller's history does not extend the local copy."""


# -- schema -------------------------------------------------------------------------------------

Migration = Callable[[Database], None]


def v1_initial(db: Database) -> None:
    """Version 1: controllers (with their pinned key), views, the audit copy and its search."""
    statements = [
        """CREATE TABLE controllers (
            id TEXT PRIMARY KEY,
            url TEXT,
            key TEXT NOT NULL,                      -- pinned at the first sync (OpenSSH line)
            synced_at TEXT
        )""",
        """CREATE TABLE views (
            controller TEXT NOT NULL,
            id TEXT NOT NULL,
            created_at TEXT,
            state TEXT,
            view TEXT NOT NULL,                     -- the controller's JSON view, as received
            PRIMARY KEY (controller, id)
        )""",
        "CREATE INDEX views_created ON views(controller, created_at)",
        # id is an explicit rowid so the search index's rowids survive a VACUUM.
        """CREATE TABLE audit_entries (
            id INTEGER PRIMARY KEY,
            controller TEXT NOT NULL,
            seq INTEGER NOT NULL,
            entry TEXT NOT NULL,                    -- canonical JSON, hashed as UTF-8 verbatim
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            at TEXT AS (json_extract(entry, '$.at')) VIRTUAL,
            event TEXT AS (json_extract(entry, '$.event')) VIRTUAL,
            actor TEXT AS (json_extract(entry, '$.actor')) VIRTUAL,
            session TEXT AS (json_extract(entry, '$.session')) VIRTUAL,
            UNIQUE (controller, seq)
        )""",
        "CREATE INDEX audit_event ON audit_entries(controller, event, seq)",
        "CREATE INDEX audit_actor ON audit_entries(controller, actor, seq)",
        "CREATE INDEX audit_session ON audit_entries(controller, session, seq)",
        "CREATE INDEX audit_at ON audit_entries(controller, at)",
        "CREATE VIRTUAL TABLE audit_text USING fts5(entry, content='', tokenize='unicode61')",
        """CREATE TRIGGER audit_entries_text AFTER INSERT ON audit_entries BEGIN
            INSERT INTO audit_text (rowid, entry) VALUES (new.id, new.entry);
        END""",
        # Only checkpoints whose signature and head were checked against the chain.
        """CREATE TABLE audit_checkpoints (
            controller TEXT NOT NULL,
            size INTEGER NOT NULL,
            head TEXT NOT NULL,
            payload TEXT NOT NULL,
            signature TEXT NOT NULL,
            verified_at TEXT NOT NULL,
            PRIMARY KEY (controller, size)
        )""",
    ]
    for statement in statements:
        db.execute(statement)


def v2_catalog(db: Database) -> None:
    """Version 2: which controller answered at which address, and the last catalog it showed.

    So the TUI has a mirror from its first connection on (not only after an audit sync, which
    pins the controller's key in `controllers`), and an offline start shows the resources.
    """
    statements = [
        """CREATE TABLE seen (
            url TEXT PRIMARY KEY,
            controller TEXT NOT NULL,               -- the id it said it had (/v1/info)
            seen_at TEXT NOT NULL
        )""",
        """CREATE TABLE catalogs (
            controller TEXT PRIMARY KEY,
            resources TEXT NOT NULL,                -- JSON, as /v1/resources answered
            info TEXT NOT NULL,                     -- JSON, as /v1/info answered
            saved_at TEXT NOT NULL
        )""",
    ]
    for statement in statements:
        db.execute(statement)


MIGRATIONS: list[Migration] = [v1_initial, v2_catalog]
"""Migration i brings a mirror from version i to i+1; only ever append to this list."""


def open_mirror_db(path: Path) -> Database:
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        db = Database(path, execute_plugins=False)
        found: int = db.conn.execute("PRAGMA user_version").fetchone()[0]
        if found > len(MIGRATIONS):
            db.close()
            raise Refused(
                f"{path}: mirror schema version {found} is newer than this bgtui understands "
                f"({len(MIGRATIONS)}); upgrade bgtui"
            )
        db.conn.execute("PRAGMA busy_timeout = 10000")
        db.enable_wal()
        for version, migration in enumerate(MIGRATIONS):
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                if db.conn.execute("PRAGMA user_version").fetchone()[0] == version:
                    migration(db)
                    db.conn.execute(f"PRAGMA user_version = {version + 1}")
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
    except sqlite3.DatabaseError as exc:
        raise Refused(f"{path}: cannot use the mirror ({exc})") from None
    return db


def entry_row(seq: int, text: str, digest: str) -> AuditRow:
    value = json.loads(text)
    session = value.get("session")
    return AuditRow(
        seq=seq,
        at=str(value.get("at", "")),
        event=str(value.get("event", "")),
        actor=str(value.get("actor", "")),
        session=str(session) if session is not None else None,
        data=value.get("data") if isinstance(value.get("data"), dict) else {},
        hash=digest,
    )


def time_bound(text: str, *, end: bool) -> str:
    """A filter time as stored text: UTC time, a date (whole day), or a duration ago."""
    value = text.strip()
    if _DATE.fullmatch(value):
        return f"{value}T23:59:59Z" if end else f"{value}T00:00:00Z"
    try:
        return utc_text(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        pass
    try:
        return utc_text(now_utc() - timedelta(seconds=parse_duration(value)))
    except Refused:
        raise Refused(
            f"bad time {text!r}: write 2026-01-31, 2026-01-31T12:00:00Z or a duration ago (2h)"
        ) from None


def match_query(text: str) -> str:
    """An FTS5 query: every word as a quoted phrase, each a prefix; punctuation splits words."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"*' for word in words)
