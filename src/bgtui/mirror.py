"""The client's local-first store (`mirror.db` in the client home): requests, sessions, audit log.

The audit log is copied from the controller entry by entry, each one checked against the hash
chain and every copy ending at a checkpoint whose controller signature was verified, so it can
be browsed, searched, verified and exported offline (DESIGN §6). The mirror remembers the last
checkpoint it verified: a controller whose history no longer extends the local copy (rewritten
or truncated) is reported loudly and the local copy is kept as it was.

One file holds any number of controllers, keyed by controller id; the schema and the records
handed out are in `mirror_schema`. A `Mirror` is one SQLite connection: call it only from the
thread that opened it (a TUI opens one per worker thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bgtui.client import ControllerClient, checkpoint_of
from bgtui.home import ClientHome
from bgtui.mirror_schema import (
    AuditFilter,
    AuditRow,
    Broken,
    Diverged,
    SyncResult,
    entry_row,
    match_query,
    open_mirror_db,
    time_bound,
)
from bgtui.protocol.errors import Refused
from bgtui.protocol.evidence import (
    GENESIS,
    AuditVerdict,
    BundleScope,
    EntryRow,
    chain_hash,
    write_bundle,
)
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Checkpoint, Signed
from bgtui.protocol.timefmt import now_utc, utc_text
from bgtui.protocol.verify import verify_checkpoint

LOCAL_COPY = "local copy"

__all__ = ["AuditFilter", "AuditRow", "AuditVerdict", "Mirror", "SyncResult", "mirror_path"]

PAGE = 5000
WALK = 10_000
SYNC_WAIT = 120.0  # seconds a sync waits for another one (another thread or process) to end
BUSY_WAIT = 10.0  # seconds any other write waits for the file's write lock (see open_mirror_db)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _revision(view: dict[str, Any]) -> int:
    """The controller's revision of a view, 0 without one (as `tui_link.revision`)."""
    value = view.get("revision")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def mirror_path(home: ClientHome) -> Path:
    """`HOME/mirror.db`."""
    return home.path / "mirror.db"


class Mirror:
    """The local copy of what one controller showed this user, in `path` (mirror.db).

    Every method is synchronous and must be called from the thread that opened the mirror.
    """

    def __init__(self, path: Path, controller_id: str) -> None:
        self.path = path
        self.controller_id = controller_id
        self.db = open_mirror_db(path)
        self.recordings_dir = path.parent / "recordings" / controller_id
        self._counts: dict[tuple[str, tuple[Any, ...], int], int] = {}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, wait: float = BUSY_WAIT) -> Iterator[None]:
        """A write transaction: takes the file's write lock at once, waiting up to `wait`
        seconds for another connection (thread or process) holding it."""
        conn = self.db.conn
        if wait != BUSY_WAIT:
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            if wait != BUSY_WAIT:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT * 1000)}")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def _savepoint(self, name: str) -> Iterator[None]:
        """Within a transaction: undoes what the block wrote if it raises."""
        conn = self.db.conn
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")

    # controllers --------------------------------------------------------------------------
    @staticmethod
    def known_controller(path: Path, url: str | None) -> str | None:
        """The controller that last answered at `url` (an audit sync or a TUI connection, the
        later one), else the only one held: for offline use."""
        if not path.exists():
            return None
        db = open_mirror_db(path)
        try:
            rows = db.conn.execute("SELECT id, url FROM controllers").fetchall()
            at_url = db.conn.execute(
                "SELECT id, coalesce(synced_at, '') FROM controllers WHERE url = ?1"
                " UNION ALL SELECT controller, seen_at FROM seen WHERE url = ?1"
                " ORDER BY 2 DESC LIMIT 1",
                (url,),
            ).fetchone()
        finally:
            db.close()
        if at_url is not None:
            return str(at_url[0])
        return str(rows[0][0]) if len(rows) == 1 else None

    def controller_key(self) -> PublicKey | None:
        """The controller key pinned at the first sync."""
        row = self.db.conn.execute(
            "SELECT key FROM controllers WHERE id = ?", (self.controller_id,)
        ).fetchone()
        return None if row is None else PublicKey.parse(row[0], "pinned controller key")

    def _check_pinned(self, key: PublicKey) -> None:
        pinned = self.controller_key()
        if pinned is not None and pinned != key:
            raise Refused(
                f"controller {self.controller_id} now presents key {key.fingerprint}, but this "
                f"mirror was synced with {pinned.fingerprint}; if its key really changed, "
                f"move {self.path} aside"
            )

    def _pin(self, key: PublicKey, url: str) -> None:
        """Pins `key` (or checks it is the one pinned); call it inside a transaction."""
        self._check_pinned(key)
        self.db.conn.execute(
            "INSERT INTO controllers (id, url, key) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET url = excluded.url",
            (self.controller_id, url, key.openssh(self.controller_id)),
        )

    # the catalog ----------------------------------------------------------------------------
    def save_catalog(self, url: str, resources: list[dict[str, Any]], info: dict[str, Any]) -> None:
        """Keeps the catalog and info this controller showed at `url`, for offline starts."""
        now = utc_text(now_utc())
        with self._transaction():
            self.db.conn.execute(
                "INSERT INTO seen (url, controller, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (url) DO UPDATE SET controller = excluded.controller,"
                " seen_at = excluded.seen_at",
                (url, self.controller_id, now),
            )
            self.db.conn.execute(
                "INSERT INTO catalogs (controller, resources, info, saved_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (controller) DO UPDATE SET resources = excluded.resources,"
                " info = excluded.info, saved_at = excluded.saved_at",
                (self.controller_id, json.dumps(resources), json.dumps(info), now),
            )

    def catalog(self) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """The resources and info last saved for this controller, if any."""
        row = self.db.conn.execute(
            "SELECT resources, info FROM catalogs WHERE controller = ?", (self.controller_id,)
        ).fetchone()
        return None if row is None else (list(json.loads(row[0])), dict(json.loads(row[1])))

    # requests and sessions ----------------------------------------------------------------
    def save_views(self, views: list[dict[str, Any]]) -> None:
        """Stores the given request views, each replacing the one held unless that one is
        newer: a higher `revision` (a view without one counts as 0; equal ones replace)."""
        rows = [
            (
                self.controller_id,
                str(v["id"]),
                v.get("created_at"),
                v.get("state"),
                json.dumps(v, sort_keys=True),
                _revision(v),
            )
            for v in views
        ]
        with self._transaction():
            self.db.conn.executemany(
                "INSERT INTO views (controller, id, created_at, state, view)"
                " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (controller, id) DO UPDATE"
                " SET created_at = excluded.created_at, state = excluded.state,"
                " view = excluded.view"
                " WHERE ?6 >= CASE json_type(views.view, '$.revision')"
                " WHEN 'integer' THEN json_extract(views.view, '$.revision') ELSE 0 END",
                rows,
            )

    def views(self) -> list[dict[str, Any]]:
        """Every stored view, newest first."""
        rows = self.db.conn.execute(
            "SELECT view FROM views WHERE controller = ? ORDER BY created_at DESC, id DESC",
            (self.controller_id,),
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def view(self, rid: str) -> dict[str, Any] | None:
        row = self.db.conn.execute(
            "SELECT view FROM views WHERE controller = ? AND id = ?", (self.controller_id, rid)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # audit reads --------------------------------------------------------------------------
    def _tail(self) -> tuple[int, str]:
        row = self.db.conn.execute(
            "SELECT seq, hash FROM audit_entries WHERE controller = ? ORDER BY seq DESC LIMIT 1",
            (self.controller_id,),
        ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def audit_size(self) -> int:
        """Entries held locally."""
        return self._tail()[0]

    def _clauses(self, f: AuditFilter, *, walk: bool = False) -> tuple[str, list[Any], str]:
        """SQL conditions on `a` (audit_entries) for `f`, and the full-text query apart.

        `walk`: keep SQLite off the filter columns' indexes (unary +), so it walks seq order
        and stops after one page; best when many entries match.
        """
        mark = "+" if walk else ""
        clauses, params = ["a.controller = ?"], [self.controller_id]
        for column in ("session", "actor"):
            value = getattr(f, column)
            if value:
                clauses.append(f"{mark}a.{column} = ?")
                params.append(value)
        if f.event and f.event.endswith("*"):
            prefix = f.event[:-1]
            clauses.append(f"{mark}a.event >= ? AND {mark}a.event < ?")
            params += [prefix, prefix + "\U0010ffff"]
        elif f.event:
            clauses.append(f"{mark}a.event = ?")
            params.append(f.event)
        if f.since:
            clauses.append(f"{mark}a.at >= ?")
            params.append(time_bound(f.since, end=False))
        if f.until:
            clauses.append(f"{mark}a.at <= ?")
            params.append(time_bound(f.until, end=True))
        match = ""
        if f.text and f.text.strip():
            match = match_query(f.text)
            if not match:  # only punctuation: a plain substring search
                clauses.append("instr(a.entry, ?) > 0")
                params.append(f.text.strip())
        return " AND ".join(clauses), params, match

    def _select(self, what: str, f: AuditFilter, *, plan: str) -> tuple[str, list[Any]]:
        """A query over the entries matching `f`: `index` (SQLite's choice), `walk` (seq
        order) or `text` (driven by the full-text matches, for few of them)."""
        where, params, match = self._clauses(f, walk=plan == "walk")
        if not match:
            return f"SELECT {what} FROM audit_entries AS a WHERE {where}", params  # noqa: S608
        if plan == "text":
            return (
                f"SELECT {what} FROM (SELECT rowid AS rid FROM audit_text"  # noqa: S608
                " WHERE audit_text MATCH ?) AS m CROSS JOIN audit_entries AS a ON a.id = m.rid"
                f" WHERE {where}",
                [match, *params],
            )
        return (
            f"SELECT {what} FROM audit_entries AS a WHERE {where} AND a.id IN"  # noqa: S608
            " (SELECT rowid FROM audit_text WHERE audit_text MATCH ?)",
            [*params, match],
        )

    def _plan(self, f: AuditFilter) -> str:
        if f.session or f.actor or (f.event and not f.event.endswith("*")):
            return "index"  # (controller, column, seq) indexes come in seq order already
        broad = self.audit_count(f) * 20 > self.audit_size()
        if broad:
            return "walk"
        return "text" if f.text and match_query(f.text) else "index"

    def audit_rows(self, offset: int, limit: int, f: AuditFilter | None = None) -> list[AuditRow]:
        """One page of entries matching `f`, newest first, skipping the `offset` newest."""
        offset, limit = max(0, offset), max(0, limit)
        if f is None or f == AuditFilter():
            # seq is contiguous from 1, so a page is a key range: no rows skipped one by one.
            top = self.audit_size() - offset
            rows = self.db.conn.execute(
                "SELECT seq, entry, hash FROM audit_entries WHERE controller = ? AND seq <= ?"
                " ORDER BY seq DESC LIMIT ?",
                (self.controller_id, top, limit),
            ).fetchall()
        else:
            sql, params = self._select("a.seq, a.entry, a.hash", f, plan=self._plan(f))
            rows = self.db.conn.execute(
                f"{sql} ORDER BY a.seq DESC LIMIT ? OFFSET ?", (*params, limit, offset)
            ).fetchall()
        return [entry_row(seq, text, digest) for seq, text, digest in rows]

    def audit_count(self, f: AuditFilter | None = None) -> int:
        """How many entries match `f` (remembered until the copy grows)."""
        if f is None or f == AuditFilter():
            return self.audit_size()
        sql, params = self._select("count(*)", f, plan="text")
        key = (sql, tuple(params), self.audit_size())
        if key not in self._counts:
            if len(self._counts) > 64:
                self._counts.clear()
            self._counts[key] = int(self.db.conn.execute(sql, params).fetchone()[0])
        return self._counts[key]

    def audit_entry(self, seq: int) -> AuditRow | None:
        row = self.db.conn.execute(
            "SELECT seq, entry, hash FROM audit_entries WHERE controller = ? AND seq = ?",
            (self.controller_id, seq),
        ).fetchone()
        return None if row is None else entry_row(*row)

    def timeline(self, session: str) -> list[AuditRow]:
        """A session's entries, oldest first."""
        rows = self.db.conn.execute(
            "SELECT seq, entry, hash FROM audit_entries WHERE controller = ? AND session = ?"
            " ORDER BY seq",
            (self.controller_id, session),
        ).fetchall()
        return [entry_row(*row) for row in rows]

    def last_verified(self) -> tuple[int, str] | None:
        """(size, head) of the newest checkpoint verified against the local chain."""
        row = self.db.conn.execute(
            "SELECT size, head FROM audit_checkpoints WHERE controller = ?"
            " ORDER BY size DESC LIMIT 1",
            (self.controller_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _entries(self, first: int = 1, last: int | None = None) -> Iterator[EntryRow]:
        """Stored (seq, bytes, prev_hash, hash) from `first` to `last`, a page at a time."""
        after = first - 1
        while True:
            page = self.db.conn.execute(
                "SELECT seq, entry, prev_hash, hash FROM audit_entries"
                " WHERE controller = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (self.controller_id, after, last if last is not None else 1 << 62, WALK),
            ).fetchall()
            for seq, text, prev_hash, digest in page:
                yield seq, text.encode(), prev_hash, digest
            if len(page) < WALK:
                return
            after = page[-1][0]

    def _checkpoints(self) -> list[tuple[int, str, Signed]]:
        rows = self.db.conn.execute(
            "SELECT size, head, payload, signature FROM audit_checkpoints"
            " WHERE controller = ? ORDER BY size",
            (self.controller_id,),
        ).fetchall()
        return [(size, head, Signed(payload.encode(), sig)) for size, head, payload, sig in rows]

    def _hash_at(self, seq: int) -> str | None:
        if seq == 0:
            return GENESIS
        row = self.db.conn.execute(
            "SELECT hash FROM audit_entries WHERE controller = ? AND seq = ?",
            (self.controller_id, seq),
        ).fetchone()
        return None if row is None else str(row[0])

    # sync ---------------------------------------------------------------------------------
    def _checked(self, item: Any, key: PublicKey) -> tuple[Checkpoint, Signed]:
        size, signed = checkpoint_of(item)
        verdict = verify_checkpoint(signed, self.controller_id, key)
        if not verdict.accepted:
            raise Refused(f"the controller's checkpoint at size {size} does not verify: {verdict}")
        checkpoint: Checkpoint = verdict.obj
        return checkpoint, signed

    def _store_checkpoint(self, checkpoint: Checkpoint, signed: Signed) -> None:
        self.db.conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints"
            " (controller, size, head, payload, signature, verified_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                self.controller_id,
                checkpoint.size,
                checkpoint.head,
                signed.payload.decode(),
                signed.signature,
                utc_text(now_utc()),
            ),
        )

    def sync(
        self,
        client: ControllerClient,
        controller_key: PublicKey,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncResult:
        """Copies the entries the controller added since the last sync, up to its newest signed
        checkpoint, checking every hash and that checkpoint against the chain.

        Raises `Refused` when the controller can't be reached or refuses (operators may not
        read the whole log) or sends a checkpoint that does not verify.

        The whole sync is one write transaction, from reading the local size to the last
        insert: a concurrent sync of the same file (another thread's or process's Mirror)
        waits for it (up to SYNC_WAIT), then starts from what this one copied.
        """
        self._check_pinned(controller_key)
        failure: Refused | None = None
        with self._transaction(wait=SYNC_WAIT):
            size, head = self._tail()
            verified = self.last_verified()
            newest, newest_signed = self._checked(client.audit_head(), controller_key)
            self._pin(controller_key, client.url)  # only a key that signed a checkpoint
            try:
                with self._savepoint("sync_entries"):  # the pin stays if copying fails
                    self._check_extends(client, controller_key, size, head, verified, newest)
                    fetched = self._fetch(client, size, head, newest, newest_signed, progress)
            except Diverged as diverged:
                return SyncResult(
                    0,
                    size,
                    verified[0] if verified else 0,
                    f"AUDIT LOG REWRITTEN on controller {self.controller_id}: {diverged}; "
                    f"the local copy ({size} entries) is kept unchanged",
                )
            except Refused as exc:
                failure = exc
        if failure is not None:
            raise failure
        return SyncResult(fetched, newest.size, newest.size)

    def _check_extends(
        self,
        client: ControllerClient,
        key: PublicKey,
        size: int,
        head: str,
        verified: tuple[int, str] | None,
        newest: Checkpoint,
    ) -> None:
        if newest.size < size:
            raise Diverged(
                f"its newest signed checkpoint covers {newest.size} entries, "
                f"but we copied {size}: entries were deleted"
            )
        if newest.size == size and newest.head != head:
            raise Diverged(f"its checkpoint at size {size} names another head than our copy")
        if size:
            theirs = client.audit_entries(after=size - 1, limit=1).get("entries") or []
            if not theirs or theirs[0].get("seq") != size:
                raise Diverged(f"it no longer serves entry {size}")
            if theirs[0].get("hash") != head or theirs[0].get("entry") != self._text(size):
                raise Diverged(f"its entry {size} differs from our copy: history was rewritten")
        if verified is not None:
            at, verified_head = verified
            found = client.audit_checkpoints(after_size=at - 1, limit=1)
            if not found or found[0].get("size") != at:
                raise Diverged(f"the checkpoint at size {at} we verified is gone")
            try:
                checkpoint, _ = self._checked(found[0], key)
            except Refused as exc:
                raise Diverged(str(exc)) from None
            if checkpoint.size != at or checkpoint.head != verified_head:
                raise Diverged(f"its checkpoint at size {at} differs from the one we verified")

    def _text(self, seq: int) -> str | None:
        row = self.db.conn.execute(
            "SELECT entry FROM audit_entries WHERE controller = ? AND seq = ?",
            (self.controller_id, seq),
        ).fetchone()
        return None if row is None else str(row[0])

    def _fetch(
        self,
        client: ControllerClient,
        size: int,
        head: str,
        newest: Checkpoint,
        signed: Signed,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Appends entries size+1..newest.size; call it inside a transaction (or savepoint),
        to be rolled back on any mismatch."""
        target, seq, prev = newest.size, size, head
        while seq < target:
            page = client.audit_entries(after=seq, limit=min(PAGE, target - seq)).get("entries")
            if not page:
                raise Refused(
                    f"the controller signed a checkpoint for {target} entries but serves only {seq}"
                )
            rows = []
            for item in page:
                number, text, digest = item.get("seq"), item.get("entry"), item.get("hash")
                if number != seq + 1 or not isinstance(text, str):
                    raise Refused(f"the controller sent entry {number} where {seq + 1} was due")
                if item.get("prev_hash") != prev:
                    raise Diverged(f"its entry {number} does not chain to our entry {seq}")
                if chain_hash(prev, text.encode()) != digest:
                    raise Diverged(f"its entry {number} does not match its own hash")
                if json.loads(text).get("seq") != number:
                    raise Diverged(f"its entry {number} says it was written as another entry")
                rows.append((self.controller_id, number, text, prev, digest))
                seq, prev = number, digest
            self.db.conn.executemany(
                "INSERT INTO audit_entries (controller, seq, entry, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            if progress is not None:
                progress(seq, target)
        if prev != newest.head:
            raise Diverged(
                f"its checkpoint at size {target} (signed {newest.signed_at}) does not "
                "match the entries it served"
            )
        self._store_checkpoint(newest, signed)
        self.db.conn.execute(
            "UPDATE controllers SET synced_at = ? WHERE id = ?",
            (utc_text(now_utc()), self.controller_id),
        )
        if progress is not None:
            progress(seq, target)
        return seq - size

    def fetch_checkpoint(
        self, client: ControllerClient, controller_key: PublicKey, at_least: int
    ) -> tuple[int, str]:
        """Fetches, checks and keeps the controller's first checkpoint covering `at_least`
        entries (so a session's evidence ends right after the session)."""
        found = client.audit_checkpoints(after_size=at_least - 1, limit=1)
        if not found:
            raise Refused(f"the controller has no checkpoint covering entry {at_least}")
        checkpoint, signed = self._checked(found[0], controller_key)
        ours = self._hash_at(checkpoint.size)
        if ours is None:
            raise Refused(f"the local copy does not reach entry {checkpoint.size}; sync first")
        if ours != checkpoint.head:
            raise Refused(
                f"AUDIT LOG REWRITTEN on controller {self.controller_id}: its checkpoint at "
                f"size {checkpoint.size} differs from our copy, which is kept unchanged"
            )
        with self._transaction():
            self._store_checkpoint(checkpoint, signed)
        return checkpoint.size, checkpoint.head

    # verify -------------------------------------------------------------------------------
    def verify(
        self, controller_key: PublicKey, progress: Callable[[int, int], None] | None = None
    ) -> AuditVerdict:
        """Recomputes the local chain and checks every kept checkpoint's signature and head."""
        size = self.audit_size()
        marks = self._checkpoints()
        try:
            for at, head, signed in marks:
                verdict = verify_checkpoint(signed, self.controller_id, controller_key)
                if not verdict.accepted:
                    raise Broken(None, f"checkpoint at size {at}: {verdict}")
                if verdict.obj.size != at or verdict.obj.head != head:
                    raise Broken(
                        None, f"checkpoint at size {at}: its columns differ from its payload"
                    )
            self._walk(size, {at: head for at, head, _ in marks}, progress)
            newest = marks[-1][0] if marks else 0
            if newest > size:
                raise Broken(size + 1, f"entries {size + 1}..{newest} are missing")
            if newest < size:
                raise Broken(
                    newest + 1, f"entries {newest + 1}..{size} are not covered by a checkpoint"
                )
        except Broken as broken:
            return AuditVerdict(
                False, size, len(marks), broken.first_bad, broken.detail, copy=LOCAL_COPY
            )
        return AuditVerdict(True, size, len(marks), copy=LOCAL_COPY)

    def _walk(
        self, size: int, heads: dict[int, str], progress: Callable[[int, int], None] | None
    ) -> None:
        sha256 = hashlib.sha256
        prev, expected = GENESIS, 1
        for seq, entry, prev_col, hash_col in self._entries():
            if seq != expected:
                raise Broken(expected, f"entry {expected} is missing")
            if prev_col != prev:
                raise Broken(seq, f"entry {seq} does not chain to entry {seq - 1}")
            digest = sha256(prev.encode() + b"\n" + entry).hexdigest()
            if digest != hash_col:
                raise Broken(seq, f"entry {seq} was modified: its bytes do not match its hash")
            if seq in heads and heads[seq] != digest:
                raise Broken(seq, f"the chain at entry {seq} differs from its signed checkpoint")
            prev, expected = digest, seq + 1
            if progress is not None and seq % WALK == 0:
                progress(seq, size)
        if progress is not None:
            progress(expected - 1, size)

    # recordings ---------------------------------------------------------------------------
    def save_recording(self, sha256: str, data: bytes) -> Path:
        """Keeps a downloaded recording (checked against `sha256`) beside the mirror."""
        if not _SHA256.fullmatch(sha256) or hashlib.sha256(data).hexdigest() != sha256:
            raise Refused(f"recording {sha256[:12]}…: its bytes do not match its SHA-256")
        self.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.recordings_dir / f"{sha256}.cast"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def recording_path(self, sha256: str) -> Path | None:
        """The downloaded recording, if it is here."""
        if not _SHA256.fullmatch(sha256):
            return None
        path = self.recordings_dir / f"{sha256}.cast"
        return path if path.is_file() else None

    def session_recordings(self, session: str) -> list[str]:
        """SHA-256s of the session's recordings, as its `recording.uploaded` entries name them."""
        return [
            str(row.data.get("sha256"))
            for row in self.timeline(session)
            if row.event == "recording.uploaded"
        ]

    def fetch_recordings(self, client: ControllerClient, session: str) -> list[Path]:
        """Downloads the session's recordings named in the local log and not yet here."""
        paths = []
        for sha256 in self.session_recordings(session):
            path = self.recording_path(sha256)
            paths.append(path or self.save_recording(sha256, client.recording(sha256)))
        return paths

    # export -------------------------------------------------------------------------------
    def export_session(self, session: str, out_dir: Path, controller_key: PublicKey) -> Path:
        """Writes an evidence bundle for one session: its entries (with those written in
        between), the checkpoint covering them, allowed_signers, hashes, README, recordings."""
        span = self.db.conn.execute(
            "SELECT min(seq), max(seq) FROM audit_entries WHERE controller = ? AND session = ?",
            (self.controller_id, session),
        ).fetchone()
        if span[0] is None:
            raise Refused(f"no audit entries of session {session} in the local copy; sync first")
        first, last = int(span[0]), int(span[1])
        covering = self.db.conn.execute(
            "SELECT min(size) FROM audit_checkpoints WHERE controller = ? AND size >= ?",
            (self.controller_id, last),
        ).fetchone()[0]
        if covering is None:
            raise Refused(f"no verified checkpoint covers entry {last} yet; sync first")
        recordings = []
        for sha256 in self.session_recordings(session):
            path = self.recording_path(sha256)
            if path is not None:
                recordings.append(path)
        scope = BundleScope(
            exported_by="bgtui from its verified copy of the log",
            session=session,
            recordings=tuple(recordings),
        )
        return self._export(out_dir, controller_key, first, int(covering), scope)

    def export_log(self, out_dir: Path, controller_key: PublicKey) -> Path:
        """Writes an evidence bundle of the whole local copy, up to its newest checkpoint."""
        verified = self.last_verified()
        if verified is None:
            raise Refused("the local copy has no verified checkpoint yet; sync first")
        scope = BundleScope(exported_by="bgtui from its verified copy of the log")
        return self._export(out_dir, controller_key, 1, verified[0], scope)

    def _export(
        self, out_dir: Path, key: PublicKey, first: int, last: int, scope: BundleScope
    ) -> Path:
        verdict = self.verify(key)
        if not verdict.ok:
            raise Refused(f"not exporting: {verdict}")
        return write_bundle(
            out_dir,
            controller_id=self.controller_id,
            controller_key=key,
            signer=None,
            entries=self._entries(first, last),
            checkpoints=((size, signed) for size, _, signed in self._checkpoints()),
            verdict=str(verdict),
            scope=scope,
        )
