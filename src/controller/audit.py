"""Tamper-evident audit log (DESIGN §6): a SHA-256 chain of canonical entries, signed checkpoints.

Entry n is the canonical JSON of {seq, at, event, actor, session, data}; its hash is
`sha256(hash[n-1] + "\\n" + entry bytes)` in hex, with 64 zeros before the first entry, so anyone
can recompute the chain with `sha256sum`. Every append ends with a controller-signed checkpoint
(size, head) in the same transaction, so the newest entry is always covered by a signature.
Entries never hold secrets: callers pass names, ids and fingerprints, never credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from heapq import merge
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bgtui.protocol.canonical import canonical
from bgtui.protocol.errors import Refused
from bgtui.protocol.evidence import GENESIS, AuditVerdict, EntryRow, chain_hash
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Checkpoint, Signed
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import now_utc, utc_text
from bgtui.protocol.verify import verify_checkpoint
from controller.evidence import write_bundle
from controller.store import on_commit, read_snapshot, transaction

CHUNK = 10_000

AuditItem = tuple[str, str, Mapping[str, Any] | None, str | None]
"""(event, actor, data, session) for `AuditLog.append_batch`."""


@dataclass(frozen=True)
class _Mark:
    """A checkpoint to check against the chain: from the database or from the head file."""

    name: str
    size: int  # where it sorts; the signed payload must agree
    signed: Signed
    head: str | None = None  # the stored copy; None for the head file, which repeats a row


class _Broken(Exception):
    def __init__(self, first_bad: int | None, detail: str) -> None:
        super().__init__(detail)
        self.first_bad = first_bad
        self.detail = detail


class AuditLog:
    """Appends to, verifies and exports the audit log in the controller's store.

    Without a `signer` the log is read-only (verify and export still work).
    """

    def __init__(
        self,
        db: Database,
        controller_id: str,
        signer: Signer | None,
        head_file: Path | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.db = db
        self.controller_id = controller_id
        self._signer = signer
        self._head_file = head_file
        self._clock = clock
        self._size, self._head = self._tail()

    @property
    def size(self) -> int:
        """Entries in the log as of this process's last read or append."""
        return self._size

    @property
    def head(self) -> str:
        return self._head

    def _tail(self) -> tuple[int, str]:
        row = self.db.conn.execute(
            "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def append(
        self,
        event: str,
        actor: str,
        data: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> int:
        """Appends one entry (and a checkpoint covering it); returns its seq."""
        return self.append_batch([(event, actor, data, session)])[0]

    def append_batch(self, items: Sequence[AuditItem]) -> list[int]:
        """Appends entries in one transaction with one signed checkpoint; returns their seqs."""
        if self._signer is None:
            raise Refused("the audit log is open read-only: no controller key to sign checkpoints")
        if not items:
            return []
        at = utc_text(self._clock())
        with transaction(self.db):
            # Read under the write lock rather than trusting the cache: another bgctl process
            # may have appended since, and the chain must not fork.
            size, head = self._tail()
            first = size + 1
            rows: list[EntryRow] = []
            for event, actor, data, session in items:
                if not event or not actor:
                    raise ValueError("an audit entry needs an event and an actor")
                size += 1
                entry = canonical(
                    {
                        "seq": size,
                        "at": at,
                        "event": event,
                        "actor": actor,
                        "session": session,
                        "data": dict(data or {}),
                    }
                )
                digest = chain_hash(head, entry)
                rows.append((size, entry, head, digest))
                head = digest
            self.db.conn.executemany(
                "INSERT INTO audit_entries (seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)", rows
            )
            checkpoint = Checkpoint(self.controller_id, size, head, at).sign(self._signer)
            self.db.conn.execute(
                "INSERT INTO audit_checkpoints (size, head, payload, signature)"
                " VALUES (?, ?, ?, ?)",
                (size, head, checkpoint.payload, checkpoint.signature),
            )
        self._size, self._head = size, head
        # Written only after the commit, so the head file is never ahead of the database; inside
        # a caller's transaction that is when the caller's transaction commits.
        on_commit(self.db, lambda: self._write_head(checkpoint))
        return list(range(first, size + 1))

    def _write_head(self, checkpoint: Signed) -> None:
        if self._head_file is not None:
            _write_atomic(self._head_file, json.dumps(checkpoint.to_json()) + "\n")

    def entries(self, after: int = 0, chunk: int = CHUNK) -> Iterator[EntryRow]:
        """Stored entries in seq order, read a page at a time (never the whole log at once)."""
        while True:
            page = self.db.conn.execute(
                "SELECT seq, entry, prev_hash, hash FROM audit_entries"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, chunk),
            ).fetchall()
            yield from page
            if len(page) < chunk:
                return
            after = page[-1][0]

    def checkpoints(self, chunk: int = CHUNK) -> Iterator[tuple[int, int, str, Signed]]:
        """Stored checkpoints as (id, size, head, signed), ordered by the size they cover.

        size and head are the stored copies; only the signed payload is authoritative.
        """
        size, ident = -1, -1
        while True:
            page = self.db.conn.execute(
                "SELECT id, size, head, payload, signature FROM audit_checkpoints"
                " WHERE size > ? OR (size = ? AND id > ?) ORDER BY size, id LIMIT ?",
                (size, size, ident, chunk),
            ).fetchall()
            for ident, size, head, payload, signature in page:
                yield ident, size, head, Signed(bytes(payload), signature)
            if len(page) < chunk:
                return

    def verify(
        self, controller_key: PublicKey, progress: Callable[[int, int], None] | None = None
    ) -> AuditVerdict:
        """Recomputes the chain from the stored bytes and checks every checkpoint against it.

        Reports the first bad entry: changed, deleted, inserted or reordered entries, a
        truncated tail, entries no signed checkpoint covers, or a bad checkpoint signature.
        """
        state = _Walk()
        total = 0
        try:
            # The head file is read before the snapshot: it is written after each commit, so
            # read in this order it can never be ahead of what the snapshot shows.
            pinned = self._read_head_file()
            with read_snapshot(self.db):
                total = self._tail()[0]
                marks = merge(
                    (
                        _Mark(f"checkpoint #{i}", s, signed, h)
                        for i, s, h, signed in self.checkpoints()
                    ),
                    pinned,
                    key=lambda mark: mark.size,
                )
                self._walk(state, marks, controller_key, total, progress)
        except _Broken as broken:
            return AuditVerdict(False, total, state.checkpoints, broken.first_bad, broken.detail)
        return AuditVerdict(True, total, state.checkpoints)

    def _read_head_file(self) -> list[_Mark]:
        path = self._head_file
        if path is None or not path.exists():
            return []
        try:
            signed = Signed.from_json(json.loads(path.read_text()))
            size = json.loads(signed.payload)["size"]
        except (OSError, ValueError, KeyError, TypeError, Refused) as exc:
            raise _Broken(None, f"head file {path} is unreadable ({exc})") from None
        if not isinstance(size, int):
            raise _Broken(None, f"head file {path} is not a checkpoint")
        return [_Mark(f"head file {path.name}", size, signed)]

    def _walk(
        self,
        state: _Walk,
        marks: Iterator[_Mark],
        key: PublicKey,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        sha256 = hashlib.sha256
        mark = next(marks, None)
        prev, before_prev = GENESIS, GENESIS
        expected = 1
        for seq, entry, prev_col, hash_col in self.entries():
            if seq != expected:
                if seq < expected:
                    raise _Broken(seq, f"entry {seq} is out of range (entries start at 1)")
                missing = (
                    f"entry {expected} is"
                    if seq == expected + 1
                    else f"entries {expected}..{seq - 1} are"
                )
                raise _Broken(expected, f"{missing} missing: the log jumps to entry {seq}")
            if prev_col != prev:
                raise self._unlinked(seq, entry, prev_col, hash_col, prev, before_prev)
            digest = sha256(prev.encode() + b"\n" + entry).hexdigest()
            if digest != hash_col:
                raise _Broken(seq, f"entry {seq} was modified: its bytes do not match its hash")
            before_prev, prev = prev, digest
            expected = seq + 1
            while mark is not None and mark.size <= seq:
                self._check_mark(mark, key, seq, prev, state)
                mark = next(marks, None)
            if progress is not None and seq % CHUNK == 0:
                progress(seq, total)
        size = expected - 1
        while mark is not None:
            checkpoint = self._check_signature(mark, key)
            if checkpoint.size <= size:
                raise _Broken(None, f"{mark.name}: covers {checkpoint.size} entries, invalid")
            raise _Broken(
                size + 1,
                f"{mark.name} covers {mark.size} entries but the log holds {size}: "
                f"entries {size + 1}..{mark.size} were deleted",
            )
        if state.covered < size:
            raise _Broken(
                state.covered + 1,
                f"entries {state.covered + 1}..{size} are not covered by a signed checkpoint",
            )
        if progress is not None:
            progress(size, total)

    def _check_signature(self, mark: _Mark, key: PublicKey) -> Checkpoint:
        verdict = verify_checkpoint(mark.signed, self.controller_id, key)
        if not verdict.accepted:
            raise _Broken(None, f"{mark.name}: {verdict}")
        checkpoint: Checkpoint = verdict.obj
        if checkpoint.size != mark.size or mark.head not in (None, checkpoint.head):
            raise _Broken(None, f"{mark.name}: its size or head column differs from what is signed")
        return checkpoint

    def _check_mark(self, mark: _Mark, key: PublicKey, seq: int, head: str, state: _Walk) -> None:
        checkpoint = self._check_signature(mark, key)
        if checkpoint.size != seq:
            raise _Broken(None, f"{mark.name}: covers {checkpoint.size} entries, invalid")
        if checkpoint.head != head:
            first = state.covered + 1
            raise _Broken(
                first,
                f"entries {first}..{seq} were rewritten: the chain at entry {seq} does not "
                f"match {mark.name} signed at {checkpoint.signed_at}",
            )
        state.covered = seq
        state.checkpoints += mark.head is not None

    def _unlinked(
        self, seq: int, entry: bytes, prev_col: str, hash_col: str, prev: str, before_prev: str
    ) -> _Broken:
        """Names what broke the link between entry seq-1 and entry seq (only on failure).

        The entry's own bytes say where it was written, and its neighbours' links say which
        entry does not belong; the checks go from the most specific explanation to the least.
        """
        if seq > 1 and prev_col == before_prev:
            target = f"entry {seq - 2}" if seq > 2 else "the start of the log"
            return _Broken(seq - 1, f"entry {seq - 1} was inserted: entry {seq} chains to {target}")
        written = _written_seq(entry)
        if written is not None and written != seq:
            return _Broken(
                seq,
                f"entry {seq} holds the entry written as {written}: "
                "entries were deleted, inserted or reordered",
            )
        following = self.db.conn.execute(
            "SELECT prev_hash FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        if following is not None and following[0] == prev:
            target = f"entry {seq - 1}" if seq > 1 else "the start of the log"
            return _Broken(seq, f"entry {seq} was inserted: entry {seq + 1} chains to {target}")
        if chain_hash(prev, entry) == hash_col:
            return _Broken(seq, f"entry {seq}: its stored prev_hash was changed")
        if seq == 1:
            return _Broken(1, "entry 1 does not start the chain")
        return _Broken(
            seq - 1,
            f"entry {seq - 1} was rewritten: entry {seq} chains to a different entry {seq - 1}",
        )

    def export(self, out_dir: Path, controller_key: PublicKey, signer: Signer) -> Path:
        """Writes an evidence bundle checkable with ssh-keygen and sha256sum (see evidence.py)."""
        with read_snapshot(self.db):
            verdict = self.verify(controller_key)
            return write_bundle(
                out_dir,
                controller_id=self.controller_id,
                controller_key=controller_key,
                signer=signer,
                entries=self.entries(),
                checkpoints=((size, signed) for _, size, _, signed in self.checkpoints()),
                verdict=str(verdict),
            )


@dataclass
class _Walk:
    covered: int = 0
    checkpoints: int = 0


def _written_seq(entry: bytes) -> int | None:
    try:
        seq = json.loads(entry).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def _write_atomic(path: Path, text: str) -> None:
    """Replaces `path` in one step, so a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
