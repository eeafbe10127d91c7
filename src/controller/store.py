"""The controller's SQLite store (state.db): requests, approvals, sessions, plane steps, audit log.

The schema grows only through `MIGRATIONS`; each runs in its own transaction and bumps
`PRAGMA user_version`, so a store is always at exactly one known version and a crash mid-way
leaves it at the previous one. A store newer than this code is refused, untouched.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from bgtui.protocol.errors import Refused

Migration = Callable[[Database], None]


def _v1_initial(db: Database) -> None:
    """Version 1: the lifecycle tables, the write-ahead plane steps and the audit log."""
    statements = [
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            resource TEXT NOT NULL,
            operator TEXT NOT NULL,                 -- trust-store name of the signer
            operator_fingerprint TEXT NOT NULL,
            state TEXT NOT NULL,                    -- DESIGN §9 states: pending, active, ended, ...
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            request_payload BLOB NOT NULL,          -- the canonical signed bytes, verbatim
            request_signature TEXT NOT NULL,        -- armored SSHSIG over request_payload
            request_digest TEXT NOT NULL UNIQUE,    -- sha256 of request_payload
            ended_reason TEXT,
            detail TEXT
        )""",
        "CREATE INDEX requests_state ON requests(state)",
        """CREATE TABLE approvals (
            digest TEXT PRIMARY KEY,                -- sha256 of payload: an approval counts once
            request_id TEXT NOT NULL REFERENCES requests(id),
            approver TEXT NOT NULL,
            approver_fingerprint TEXT NOT NULL,
            decision TEXT NOT NULL,                 -- approve | reject
            payload BLOB NOT NULL,
            signature TEXT NOT NULL,
            received_at TEXT NOT NULL
        )""",
        "CREATE INDEX approvals_request ON approvals(request_id)",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE REFERENCES requests(id),
            state TEXT NOT NULL,
            approved_duration INTEGER NOT NULL,     -- seconds; the clock starts at activated_at
            activated_at TEXT,
            expires_at TEXT,
            ended_at TEXT,
            ended_reason TEXT,
            receipt_payload BLOB,                   -- the signed TeardownReceipt, once ended
            receipt_signature TEXT
        )""",
        "CREATE INDEX sessions_state ON sessions(state)",
        # Write-ahead intents (DESIGN §5): a row is written before a provider acts and updated
        # after, so a restart can find and tear down anything a crash left half-made.
        """CREATE TABLE plane_steps (
            id INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            plane TEXT NOT NULL,                    -- credential | network
            provider TEXT NOT NULL,
            action TEXT NOT NULL,                   -- mint | teardown
            artifact_kind TEXT NOT NULL,
            artifact_name TEXT NOT NULL,            -- named before it exists; holds the session id
            state TEXT NOT NULL,                    -- intent | done | failed
            detail TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX plane_steps_session ON plane_steps(session_id)",
        # Only seq, entry, prev_hash and hash are stored; the columns the auditor filters on
        # are generated from the hashed bytes, so they can never disagree with the chain.
        """CREATE TABLE audit_entries (
            seq INTEGER PRIMARY KEY,                -- 1-based, contiguous
            entry BLOB NOT NULL,                    -- canonical JSON bytes, hashed verbatim
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            at TEXT AS (json_extract(CAST(entry AS TEXT), '$.at')) VIRTUAL,
            event TEXT AS (json_extract(CAST(entry AS TEXT), '$.event')) VIRTUAL,
            actor TEXT AS (json_extract(CAST(entry AS TEXT), '$.actor')) VIRTUAL,
            session TEXT AS (json_extract(CAST(entry AS TEXT), '$.session')) VIRTUAL
        )""",
        "CREATE INDEX audit_entries_event ON audit_entries(event)",
        "CREATE INDEX audit_entries_actor ON audit_entries(actor)",
        "CREATE INDEX audit_entries_session ON audit_entries(session)",
        "CREATE INDEX audit_entries_at ON audit_entries(at)",
        # size and head are copies of the signed payload, for ordering and queries; verification
        # trusts only the payload and refuses a row whose copies disagree with it.
        """CREATE TABLE audit_checkpoints (
            id INTEGER PRIMARY KEY,
            size INTEGER NOT NULL,
            head TEXT NOT NULL,
            payload BLOB NOT NULL,                  -- canonical Checkpoint bytes
            signature TEXT NOT NULL                 -- armored SSHSIG, namespace bgtui-checkpoint@v1
        )""",
        "CREATE INDEX audit_checkpoints_size ON audit_checkpoints(size, id)",
    ]
    for statement in statements:
        db.execute(statement)


MIGRATIONS: list[Migration] = [_v1_initial]
"""Migration i brings a store from version i to i+1; only ever append to this list."""

SCHEMA_VERSION = len(MIGRATIONS)


def in_transaction(db: Database) -> bool:
    """Whether a transaction is open on this connection (a call, so checks are never cached)."""
    return db.conn.in_transaction


_AFTER_COMMIT: weakref.WeakKeyDictionary[Database, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def on_commit(db: Database, callback: Callable[[], None]) -> None:
    """Runs `callback` once the outermost open transaction commits (now, if none is open).

    For effects outside the database (the audit head file) that must never get ahead of it.
    """
    if in_transaction(db):
        _AFTER_COMMIT.setdefault(db, []).append(callback)
    else:
        callback()


def _run_after_commit(db: Database, committed: bool) -> None:
    callbacks = _AFTER_COMMIT.pop(db, [])
    if committed:
        for callback in callbacks:
            callback()


@contextmanager
def transaction(db: Database, *, immediate: bool = True) -> Iterator[Database]:
    """One write transaction: commit on success, roll back on any error.

    IMMEDIATE takes the write lock up front, so a read-then-write (the audit tail, a state
    check) can't be invalidated by another writer between the read and the write. Inside an
    open transaction it becomes a savepoint, so callers can group a state change with its
    audit entry.
    """
    if in_transaction(db):
        name = f"bg_{secrets.token_hex(8)}"
        db.conn.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            if in_transaction(db):
                db.conn.execute(f"ROLLBACK TO {name}")
                db.conn.execute(f"RELEASE {name}")
            raise
        db.conn.execute(f"RELEASE {name}")
        return
    db.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
    except BaseException:
        if in_transaction(db):
            db.conn.execute("ROLLBACK")
        _run_after_commit(db, committed=False)
        raise
    db.conn.execute("COMMIT")
    _run_after_commit(db, committed=True)


@contextmanager
def read_snapshot(db: Database) -> Iterator[Database]:
    """A consistent view for a multi-query read (WAL readers see one snapshot until the end).

    Joins the caller's transaction if one is open.
    """
    if in_transaction(db):
        yield db
        return
    db.conn.execute("BEGIN")
    try:
        yield db
    finally:
        if in_transaction(db):
            db.conn.execute("ROLLBACK")


def user_version(db: Database) -> int:
    version: int = db.conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def open_store(path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> Database:
    """Opens (or creates) state.db in WAL mode with foreign keys on, migrated to the latest version.

    `migrations` is for tests that prove an upgrade keeps data; callers use the default.
    """
    created = not path.exists()
    try:
        db = Database(path, execute_plugins=False)
    except sqlite3.Error as exc:
        raise Refused(f"{path}: cannot open the store ({exc})") from None
    try:
        # Checked before any pragma that writes (journal_mode), so a refused store is untouched.
        found = user_version(db)
        if found > len(migrations):
            raise Refused(
                f"{path}: store schema version {found} is newer than this bgctl understands "
                f"({len(migrations)}); upgrade bgctl"
            )
        if created:
            os.chmod(path, 0o600)  # not secret, but nobody else's business either
        # Another bgctl process (the CLI while `serve` runs) waits for the lock instead of failing.
        db.conn.execute("PRAGMA busy_timeout = 10000")
        db.conn.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        # FULL: a commit is on disk before the controller acts on it (an intent row survives a
        # crash or power cut, and the audit head file is never ahead of the database).
        db.conn.execute("PRAGMA synchronous = FULL")
        _migrate(db, migrations)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise Refused(f"{path}: cannot use the store ({exc})") from None
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: Database, migrations: Sequence[Migration]) -> None:
    for version, migration in enumerate(migrations):
        if user_version(db) > version:
            continue
        with transaction(db):
            # Re-read under the write lock: another process may have migrated meanwhile.
            if user_version(db) != version:
                continue
            migration(db)
            db.conn.execute(f"PRAGMA user_version = {version + 1}")
