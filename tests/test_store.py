"""The controller's SQLite store: schema, migrations, refusals and durability, on real files."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlite_utils import Database

from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from controller.audit import AuditLog
from controller.store import MIGRATIONS, SCHEMA_VERSION, open_store, transaction, user_version

TABLES = {"requests", "approvals", "sessions", "plane_steps", "audit_entries", "audit_checkpoints"}
NOW = "2026-01-31T12:00:00Z"


def file_digests(root: Path) -> dict[str, str]:
    """Every file under `root` with its SHA-256, to prove a refusal changed nothing."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def add_request(db: Database, request_id: str = "01REQ") -> None:
    db["requests"].insert(
        {
            "id": request_id,
            "resource": "orders-db",
            "operator": "alice",
            "operator_fingerprint": "SHA256:alice",
            "state": "pending",
            "created_at": NOW,
            "updated_at": NOW,
            "request_payload": b'{"type":"request"}',
            "request_signature": "-----BEGIN SSH SIGNATURE-----",
            "request_digest": f"digest-of-{request_id}",
        }
    )


def test_a_new_store_has_every_table_at_the_current_version(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    assert set(db.table_names()) >= TABLES
    assert user_version(db) == SCHEMA_VERSION == len(MIGRATIONS)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert {"session_id"} in [set(i.columns) for i in db["plane_steps"].indexes]
    indexed = {tuple(i.columns) for i in db["audit_entries"].indexes}
    assert {("event",), ("actor",), ("session",), ("at",)} <= indexed


def test_reopening_is_idempotent_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = open_store(path)
    add_request(db)
    db.close()
    again = open_store(path)
    assert user_version(again) == SCHEMA_VERSION
    assert [row["id"] for row in again["requests"].rows] == ["01REQ"]


def test_a_newer_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    before = file_digests(tmp_path)
    with pytest.raises(Refused) as refused:
        open_store(path)
    assert str(refused.value) == (
        f"{path}: store schema version {SCHEMA_VERSION + 1} is newer than this bgctl "
        f"understands ({SCHEMA_VERSION}); upgrade bgctl"
    )
    assert file_digests(tmp_path) == before


def _v2_add_request_priority(db: Database) -> None:
    db.execute("ALTER TABLE requests ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")


def test_an_upgrade_keeps_every_row_and_the_audit_chain(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    key = PrivateKey.generate("acme-prod")
    db = open_store(path)
    add_request(db)
    AuditLog(db, "acme-prod", key).append_batch(
        [("request.new", "alice", {"n": n}, None) for n in range(5)]
    )
    db.close()

    upgraded = open_store(path, [*MIGRATIONS, _v2_add_request_priority])
    assert user_version(upgraded) == SCHEMA_VERSION + 1
    assert [(r["id"], r["priority"]) for r in upgraded["requests"].rows] == [("01REQ", 0)]
    assert AuditLog(upgraded, "acme-prod", None).verify(key.public).ok
    upgraded.close()
    # and the older code now refuses the upgraded store instead of misreading it
    with pytest.raises(Refused, match="upgrade bgctl"):
        open_store(path)


def test_a_failing_migration_leaves_the_store_at_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(path).close()

    def half_done(db: Database) -> None:
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration crashed")

    with pytest.raises(RuntimeError, match="migration crashed"):
        open_store(path, [*MIGRATIONS, half_done])
    db = open_store(path)
    assert user_version(db) == SCHEMA_VERSION
    assert "half" not in db.table_names()


def test_foreign_keys_and_single_use_keys_are_enforced(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    approval = {
        "digest": "d1",
        "request_id": "no-such-request",
        "approver": "bob",
        "approver_fingerprint": "SHA256:bob",
        "decision": "approve",
        "payload": b"{}",
        "signature": "sig",
        "received_at": NOW,
    }
    with pytest.raises(sqlite3.IntegrityError):
        db["approvals"].insert(approval)
    add_request(db)
    db["approvals"].insert({**approval, "request_id": "01REQ"})
    with pytest.raises(sqlite3.IntegrityError):  # the same approval bytes count once
        db["approvals"].insert({**approval, "request_id": "01REQ"})
    session = {"id": "s1", "request_id": "01REQ", "state": "activating", "approved_duration": 900}
    db["sessions"].insert(session)
    with pytest.raises(sqlite3.IntegrityError):  # one session per request
        db["sessions"].insert({**session, "id": "s2"})


def test_a_nested_transaction_rolls_back_alone(tmp_path: Path) -> None:
    db = open_store(tmp_path / "state.db")
    with transaction(db):
        add_request(db, "kept")
        with pytest.raises(RuntimeError), transaction(db):
            add_request(db, "dropped")
            raise RuntimeError
    assert [row["id"] for row in db["requests"].rows] == ["kept"]


def test_something_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Refused, match="cannot use the store"):
        open_store(path)


KILLED_WRITER = """
import sys, time
from pathlib import Path
from controller.store import open_store, transaction

def add_request(db, request_id):
    db["requests"].insert({"id": request_id, "resource": "r", "operator": "alice",
        "operator_fingerprint": "f", "state": "pending", "created_at": "t", "updated_at": "t",
        "request_payload": b"{}", "request_signature": "s", "request_digest": request_id})

db = open_store(Path(sys.argv[1]))
add_request(db, "committed")
db["sessions"].insert({"id": "s1", "request_id": "committed", "state": "activating",
                       "approved_duration": 900})
db["plane_steps"].insert({"session_id": "s1", "plane": "credential", "provider": "postgres",
    "action": "mint", "artifact_kind": "role", "artifact_name": "bg_s1", "state": "intent",
    "created_at": "t", "updated_at": "t"})
with transaction(db):
    add_request(db, "in-flight")
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_committed_intent_survives_sigkill_and_an_open_transaction_does_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    writer.send_signal(signal.SIGKILL)
    assert writer.wait(timeout=30) == -signal.SIGKILL

    db = open_store(path)
    assert [row["id"] for row in db["requests"].rows] == ["committed"]
    steps = list(db["plane_steps"].rows)
    assert [(s["artifact_name"], s["state"]) for s in steps] == [("bg_s1", "intent")]
