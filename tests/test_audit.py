"""The audit log: an intact log verifies, every kind of tampering is caught and the first bad
entry named, and an exported bundle checks out with the real ssh-keygen, sha256sum and sh."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database

from bgtui.protocol.canonical import canonical, parse_canonical
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Checkpoint, Signed
from controller.audit import GENESIS, AuditLog, AuditVerdict, chain_hash
from controller.store import open_store, transaction

KEY = PrivateKey.generate("acme-prod")
MALLORY = PrivateKey.generate("mallory")


def clock() -> datetime:
    return datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_store(tmp_path / "state.db")


@pytest.fixture
def head(tmp_path: Path) -> Path:
    return tmp_path / "audit-head.json"


@pytest.fixture
def log(db: Database, head: Path) -> AuditLog:
    """Ten entries from six appends: checkpoints cover sizes 1, 2, 3, 4, 7 and 10."""
    audit = AuditLog(db, "acme-prod", KEY, head_file=head, clock=clock)
    for n in range(1, 5):
        audit.append("request.new", "alice", {"request": f"r{n}"}, session=None)
    for first in (5, 8):
        audit.append_batch(
            [("session.active", "alice", {"n": n}, f"s{n}") for n in range(first, first + 3)]
        )
    return audit


def sql(db: Database, statement: str, params: tuple[object, ...] = ()) -> None:
    """Tampers with the store the way someone with write access to state.db could."""
    db.conn.execute(statement, params)
    db.conn.commit()


def entry(db: Database, seq: int) -> bytes:
    return bytes(
        db.conn.execute("SELECT entry FROM audit_entries WHERE seq = ?", (seq,)).fetchone()[0]
    )


def stored_hash(db: Database, seq: int) -> str:
    return str(
        db.conn.execute("SELECT hash FROM audit_entries WHERE seq = ?", (seq,)).fetchone()[0]
    )


def renumber(db: Database, from_seq: int, delta: int) -> None:
    """Shifts entries from `from_seq` on by `delta`, through negatives to dodge key clashes."""
    sql(db, "UPDATE audit_entries SET seq = -seq WHERE seq >= ?", (from_seq,))
    sql(db, "UPDATE audit_entries SET seq = -seq + ? WHERE seq < 0", (delta,))


def rechain(db: Database, from_seq: int) -> None:
    """Recomputes prev_hash and hash from `from_seq` on, as a careful forger would."""
    prev = GENESIS if from_seq == 1 else stored_hash(db, from_seq - 1)
    rows = db.conn.execute(
        "SELECT seq, entry FROM audit_entries WHERE seq >= ? ORDER BY seq", (from_seq,)
    ).fetchall()
    for seq, data in rows:
        digest = chain_hash(prev, bytes(data))
        sql(
            db,
            "UPDATE audit_entries SET prev_hash = ?, hash = ? WHERE seq = ?",
            (prev, digest, seq),
        )
        prev = digest


def forged_entry(seq: int) -> bytes:
    return canonical(
        {
            "seq": seq,
            "at": "2026-01-31T12:00:00Z",
            "event": "session.end",
            "actor": "mallory",
            "session": None,
            "data": {},
        }
    )


def broken(log: AuditLog) -> AuditVerdict:
    verdict = log.verify(KEY.public)
    assert not verdict.ok, "tampering went unnoticed"
    return verdict


def test_an_intact_log_verifies(log: AuditLog) -> None:
    seen: list[tuple[int, int]] = []
    verdict = log.verify(KEY.public, progress=lambda done, total: seen.append((done, total)))
    assert verdict == AuditVerdict(True, 10, 6)
    assert str(verdict) == "audit log intact: 10 entries, 6 checkpoints verified"
    assert seen[-1] == (10, 10)


def test_entries_are_canonical_and_chained_by_the_documented_rule(log: AuditLog) -> None:
    prev = GENESIS
    for seq in range(1, 11):
        data = entry(log.db, seq)
        assert parse_canonical(data)["seq"] == seq
        prev = hashlib.sha256(prev.encode() + b"\n" + data).hexdigest()
        assert stored_hash(log.db, seq) == prev
    assert parse_canonical(entry(log.db, 9)) == {
        "seq": 9,
        "at": "2026-01-31T12:00:00Z",
        "event": "session.active",
        "actor": "alice",
        "session": "s9",
        "data": {"n": 9},
    }
    row = next(log.db.query("SELECT event, actor, session FROM audit_entries WHERE seq = 9"))
    assert row == {"event": "session.active", "actor": "alice", "session": "s9"}


def test_the_head_file_holds_the_newest_checkpoint(log: AuditLog, head: Path) -> None:
    signed = Signed.from_json(json.loads(head.read_text()))
    checkpoint: Checkpoint = signed.decode(Checkpoint)
    assert (checkpoint.size, checkpoint.head) == (10, log.head)


def test_a_restarted_controller_continues_the_chain(
    log: AuditLog, tmp_path: Path, head: Path
) -> None:
    log.db.close()
    again = AuditLog(open_store(tmp_path / "state.db"), "acme-prod", KEY, head_file=head)
    assert (again.size, again.head) == (10, log.head)
    assert again.append("controller.start", "bgctl") == 11
    assert again.verify(KEY.public) == AuditVerdict(True, 11, 7)


def test_an_empty_log_verifies(db: Database) -> None:
    assert AuditLog(db, "acme-prod", KEY).verify(KEY.public) == AuditVerdict(True, 0, 0)


def test_a_read_only_log_refuses_to_append(db: Database) -> None:
    with pytest.raises(Refused, match="read-only"):
        AuditLog(db, "acme-prod", None).append("x", "y")


def test_an_append_inside_a_rolled_back_transaction_leaves_nothing(
    log: AuditLog, head: Path
) -> None:
    before = head.read_bytes()
    with pytest.raises(RuntimeError), transaction(log.db):
        log.append("session.end", "alice")
        raise RuntimeError("the state change failed")
    assert head.read_bytes() == before  # never ahead of the database
    assert log.verify(KEY.public) == AuditVerdict(True, 10, 6)
    with transaction(log.db):
        log.append("session.end", "alice")
        assert head.read_bytes() == before  # not until the caller's transaction commits
    assert Signed.from_json(json.loads(head.read_text())).decode(Checkpoint).size == 11
    assert log.verify(KEY.public).ok


def test_a_modified_entry_is_named(log: AuditLog) -> None:
    sql(
        log.db,
        "UPDATE audit_entries SET entry = ? WHERE seq = 5",
        (entry(log.db, 5).replace(b'"alice"', b'"mallory"'),),
    )
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 was modified" in verdict.detail
    assert str(verdict).startswith("audit log broken at entry 5: ")


def test_a_modified_and_rehashed_entry_is_named(log: AuditLog) -> None:
    data = entry(log.db, 5).replace(b'"alice"', b'"mallory"')
    prev = stored_hash(log.db, 4)
    sql(
        log.db,
        "UPDATE audit_entries SET entry = ?, hash = ? WHERE seq = 5",
        (data, chain_hash(prev, data)),
    )
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 was rewritten" in verdict.detail


def test_a_rewritten_tail_is_caught_by_the_next_checkpoint(log: AuditLog, head: Path) -> None:
    head.unlink()
    sql(
        log.db,
        "UPDATE audit_entries SET entry = ? WHERE seq = 9",
        (entry(log.db, 9).replace(b'"alice"', b'"mallory"'),),
    )
    rechain(log.db, 9)
    verdict = broken(log)
    assert verdict.first_bad == 8  # the checkpoint at 7 still holds; 8..10 are suspect
    assert "entries 8..10 were rewritten" in verdict.detail
    assert "checkpoint #6" in verdict.detail


def test_a_deleted_entry_is_named(log: AuditLog) -> None:
    sql(log.db, "DELETE FROM audit_entries WHERE seq = 5")
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 is missing" in verdict.detail


def test_a_deleted_entry_with_the_rest_renumbered_is_named(log: AuditLog) -> None:
    sql(log.db, "DELETE FROM audit_entries WHERE seq = 5")
    renumber(log.db, 6, -1)
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 holds the entry written as 6" in verdict.detail


def test_an_inserted_entry_is_named(log: AuditLog) -> None:
    renumber(log.db, 5, +1)
    forged = forged_entry(5)
    prev = stored_hash(log.db, 4)
    sql(
        log.db,
        "INSERT INTO audit_entries (seq, entry, prev_hash, hash) VALUES (5, ?, ?, ?)",
        (forged, prev, chain_hash(prev, forged)),
    )
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 was inserted" in verdict.detail


def test_an_inserted_unchained_entry_is_named(log: AuditLog) -> None:
    renumber(log.db, 5, +1)
    sql(
        log.db,
        "INSERT INTO audit_entries (seq, entry, prev_hash, hash) VALUES (5, ?, ?, ?)",
        (forged_entry(5), "f" * 64, "e" * 64),
    )
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 was inserted" in verdict.detail


def test_reordered_entries_are_named(log: AuditLog) -> None:
    sql(log.db, "UPDATE audit_entries SET seq = -1 WHERE seq = 5")
    sql(log.db, "UPDATE audit_entries SET seq = 5 WHERE seq = 6")
    sql(log.db, "UPDATE audit_entries SET seq = 6 WHERE seq = -1")
    verdict = broken(log)
    assert verdict.first_bad == 5
    assert "entry 5 holds the entry written as 6" in verdict.detail


def test_a_changed_prev_hash_column_is_named(log: AuditLog) -> None:
    sql(log.db, "UPDATE audit_entries SET prev_hash = ? WHERE seq = 6", ("0" * 64,))
    verdict = broken(log)
    assert verdict.first_bad == 6
    assert "prev_hash" in verdict.detail


def test_a_truncated_tail_is_caught_by_a_remaining_checkpoint(log: AuditLog, head: Path) -> None:
    head.unlink()
    sql(log.db, "DELETE FROM audit_entries WHERE seq > 7")
    verdict = broken(log)
    assert verdict.first_bad == 8
    assert "checkpoint #6 covers 10 entries but the log holds 7" in verdict.detail
    assert "entries 8..10 were deleted" in verdict.detail


def test_a_truncated_tail_with_its_checkpoints_is_caught_by_the_head_file(log: AuditLog) -> None:
    sql(log.db, "DELETE FROM audit_entries WHERE seq > 7")
    sql(log.db, "DELETE FROM audit_checkpoints WHERE size > 7")
    verdict = broken(log)
    assert verdict.first_bad == 8
    assert "head file audit-head.json covers 10 entries but the log holds 7" in verdict.detail


def test_a_checkpoint_signed_by_another_key_is_refused(log: AuditLog) -> None:
    payload = bytes(
        log.db.conn.execute("SELECT payload FROM audit_checkpoints WHERE id = 5").fetchone()[0]
    )
    forged = Checkpoint.from_json(json.loads(payload)).sign(MALLORY)
    sql(log.db, "UPDATE audit_checkpoints SET signature = ? WHERE id = 5", (forged.signature,))
    verdict = broken(log)
    assert verdict.first_bad is None
    assert "checkpoint #5" in verdict.detail
    assert "not this controller's key" in verdict.detail


def test_a_checkpoint_with_a_changed_head_fails_its_signature(log: AuditLog, head: Path) -> None:
    head.unlink()
    sql(log.db, "DELETE FROM audit_entries WHERE seq > 7")
    # the forger moves the newest checkpoint back to cover only what is left
    payload = json.loads(
        bytes(
            log.db.conn.execute("SELECT payload FROM audit_checkpoints WHERE id = 6").fetchone()[0]
        )
    )
    payload.update(size=7, head=stored_hash(log.db, 7))
    sql(
        log.db,
        "UPDATE audit_checkpoints SET payload = ?, size = 7, head = ? WHERE id = 6",
        (canonical(payload), payload["head"]),
    )
    verdict = broken(log)
    assert "checkpoint #6" in verdict.detail
    assert "bad signature" in verdict.detail


def test_a_forged_head_file_is_refused(log: AuditLog, head: Path) -> None:
    forged = Checkpoint("acme-prod", 10, log.head, "2026-01-31T12:00:00Z").sign(MALLORY)
    head.write_text(json.dumps(forged.to_json()))
    verdict = broken(log)
    assert "head file" in verdict.detail
    assert "not this controller's key" in verdict.detail


def test_a_checkpoint_row_whose_columns_differ_from_its_payload_is_refused(log: AuditLog) -> None:
    sql(log.db, "UPDATE audit_checkpoints SET head = ? WHERE id = 3", ("a" * 64,))
    verdict = broken(log)
    assert verdict.detail == "checkpoint #3: its size or head column differs from what is signed"


def test_entries_appended_without_a_checkpoint_are_reported(log: AuditLog) -> None:
    prev = log.head
    for seq in (11, 12):
        data = forged_entry(seq)
        digest = chain_hash(prev, data)
        sql(
            log.db,
            "INSERT INTO audit_entries (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)",
            (seq, data, prev, digest),
        )
        prev = digest
    verdict = broken(log)
    assert verdict.first_bad == 11
    assert verdict.detail == "entries 11..12 are not covered by a signed checkpoint"


def test_another_controllers_key_does_not_verify(log: AuditLog) -> None:
    verdict = log.verify(MALLORY.public)
    assert not verdict.ok
    assert "not this controller's key" in verdict.detail


def test_verification_pages_through_a_long_log(db: Database) -> None:
    audit = AuditLog(db, "acme-prod", KEY, clock=clock)
    for start in range(0, 25_000, 5_000):
        audit.append_batch([("tick", "bgctl", {"n": n}, None) for n in range(start, start + 5_000)])
    seen: list[tuple[int, int]] = []
    assert audit.verify(KEY.public, lambda done, total: seen.append((done, total))).ok
    assert seen == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]
    sql(db, "DELETE FROM audit_entries WHERE seq = 10001")  # the first row of the second page
    verdict = broken(audit)
    assert verdict.first_bad == 10_001


# --- the evidence bundle, checked with the real tools ----------------------------------------


def run(bundle: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Runs a command line as the README writes it (`tool args [< file]`) in the bundle."""
    argv, _, stdin = command.partition(" < ")
    return subprocess.run(
        shlex.split(argv),
        input=(bundle / stdin).read_text() if stdin else None,
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )


def ssh_verify(namespace: str, message: str) -> str:
    return (
        f"ssh-keygen -Y verify -f allowed_signers -I acme-prod -n {namespace} "
        f"-s {message}.sig < {message}"
    )


@pytest.fixture
def bundle(log: AuditLog, tmp_path: Path) -> Path:
    return log.export(tmp_path / "evidence", KEY.public, KEY)


def test_an_exported_bundle_checks_out_with_stock_tools(bundle: Path, log: AuditLog) -> None:
    lines = (bundle / "entries.jsonl").read_bytes().splitlines(keepends=True)
    assert lines == [entry(log.db, seq) + b"\n" for seq in range(1, 11)]
    assert sorted(p.name for p in (bundle / "checkpoints").iterdir()) == sorted(
        f"{size:08d}.json{ext}" for size in (1, 2, 3, 4, 7, 10) for ext in ("", ".sig")
    )
    checks = [
        ssh_verify("bgtui-export@v1", "SHA256SUMS"),
        "sha256sum -c SHA256SUMS",
        ssh_verify("bgtui-checkpoint@v1", "checkpoints/00000010.json"),
        ssh_verify("bgtui-checkpoint@v1", "checkpoints/00000004.json"),
        "sh verify-chain.sh",
    ]
    for command in checks:
        result = run(bundle, command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert f"OK: 10 entries, head {log.head}" in run(bundle, "sh verify-chain.sh").stdout
    readme = (bundle / "README.md").read_text()
    for command in ("sha256sum -c SHA256SUMS", "sh verify-chain.sh", "-n bgtui-export@v1"):
        assert command in readme
    assert "audit log intact: 10 entries" in readme


def test_a_tampered_bundle_fails_the_stock_checks(bundle: Path) -> None:
    path = bundle / "entries.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"r3"', b'"r9"'))
    sums = run(bundle, "sha256sum -c SHA256SUMS")
    assert sums.returncode != 0
    assert "entries.jsonl: FAILED" in sums.stdout
    chain = run(bundle, "sh verify-chain.sh")
    assert chain.returncode == 1
    assert "FAIL: entry 3: hash differs from hashes.txt" in chain.stderr


def test_a_rehashed_bundle_fails_at_the_signed_checkpoint(bundle: Path) -> None:
    path = bundle / "entries.jsonl"
    lines = path.read_bytes().replace(b'"r3"', b'"r9"').splitlines()
    prev, hashes = GENESIS, []
    for seq, line in enumerate(lines, 1):
        digest = chain_hash(prev, line)
        hashes.append(f"{seq} {prev} {digest}\n")
        prev = digest
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    (bundle / "hashes.txt").write_text("".join(hashes))
    # even with SHA256SUMS recomputed, its signature no longer matches
    sums = subprocess.run(
        ["sha256sum", "entries.jsonl"], cwd=bundle, capture_output=True, text=True
    )
    old = (bundle / "SHA256SUMS").read_text().splitlines()
    new = [sums.stdout.strip() if line.endswith("  entries.jsonl") else line for line in old]
    (bundle / "SHA256SUMS").write_text("\n".join(new) + "\n")
    assert run(bundle, "sha256sum -c SHA256SUMS").returncode != 0  # hashes.txt changed too
    assert run(bundle, ssh_verify("bgtui-export@v1", "SHA256SUMS")).returncode != 0
    chain = run(bundle, "sh verify-chain.sh")
    assert chain.returncode == 1
    assert "chain differs from checkpoints/00000003.json" in chain.stderr


def test_export_refuses_a_non_empty_directory_and_a_foreign_key(
    log: AuditLog, tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="not empty"):
        log.export(busy, KEY.public, KEY)
    with pytest.raises(Refused, match="not the controller key"):
        log.export(tmp_path / "other", KEY.public, MALLORY)


def test_a_bundle_missing_its_last_entries_fails_the_chain_check(bundle: Path) -> None:
    for name in ("entries.jsonl", "hashes.txt"):
        path = bundle / name
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-2]))
    chain = run(bundle, "sh verify-chain.sh")
    assert chain.returncode == 1
    assert "checkpoints/00000010.json covers 10 entries, entries.jsonl holds 8" in chain.stderr
