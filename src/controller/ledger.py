"""The lifecycle's rows in state.db: requests, approvals, sessions and plane steps.

All SQL for the lifecycle lives here so the rules in `lifecycle` and `orchestrator` read as
rules. Times are RFC 3339 UTC text; signed bytes are stored verbatim beside their signatures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bgtui.protocol.errors import Refused
from bgtui.protocol.objects import Approval, Request, Signed
from bgtui.protocol.timefmt import utc_text
from controller.store import transaction

FINAL = ("ended", "rejected", "cancelled", "expired", "failed")
LIVE = ("activating", "active", "ending")
STATES = ("pending", *LIVE, *FINAL)


def _marks(values: tuple[str, ...]) -> str:
    """SQL placeholders for an IN list: only `?` marks, never values."""
    return ",".join("?" * len(values))


class NotFound(Refused):
    """No such request (or not one the caller may see)."""


@dataclass(frozen=True)
class Step:
    """One write-ahead plane step: an intent before a provider acts, its result after."""

    id: int
    session_id: str
    plane: str
    provider: str
    action: str
    artifact_kind: str
    artifact_name: str
    state: str
    detail: dict[str, Any]
    created_at: str
    updated_at: str


class Ledger:
    """Reads and writes the lifecycle tables; every write is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # requests ---------------------------------------------------------------------------
    def insert_request(self, signed: Signed, req: Request, operator: str, now: datetime) -> None:
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO requests (id, resource, operator, operator_fingerprint, state,"
                " created_at, updated_at, request_payload, request_signature, request_digest)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                [
                    req.id,
                    req.resource,
                    operator,
                    req.operator_fingerprint,
                    utc_text(now),
                    utc_text(now),
                    signed.payload,
                    signed.signature,
                    signed.digest,
                ],
            )

    def request_exists(self, rid: str, digest: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM requests WHERE id = ? OR request_digest = ?", [rid, digest]
        ).fetchone()
        return row is not None

    def row(self, rid: str) -> dict[str, Any]:
        cursor = self.db.execute("SELECT * FROM requests WHERE id = ?", [rid])
        values = cursor.fetchone()
        if values is None:
            raise NotFound(f"no request {rid!r}")
        return dict(zip([c[0] for c in cursor.description], values, strict=True))

    def request(self, rid: str) -> tuple[Signed, Request]:
        row = self.row(rid)
        signed = Signed(bytes(row["request_payload"]), row["request_signature"])
        req: Request = signed.decode(Request)
        return signed, req

    def state(self, rid: str) -> str:
        state: str = self.row(rid)["state"]
        return state

    def set_state(
        self,
        rid: str,
        state: str,
        now: datetime,
        *,
        ended_reason: str | None = None,
        detail: str | None = None,
        expect: tuple[str, ...] | None = None,
    ) -> bool:
        """Moves a request to `state`; with `expect`, only from one of those states."""
        assert state in STATES, state
        sql = "UPDATE requests SET state = ?, updated_at = ?, detail = coalesce(?, detail)"
        args: list[Any] = [state, utc_text(now), detail]
        if ended_reason is not None:
            sql += ", ended_reason = ?"
            args.append(ended_reason)
        sql += " WHERE id = ?"
        args.append(rid)
        if expect:
            sql += f" AND state IN ({_marks(expect)})"
            args.extend(expect)
        with transaction(self.db):
            changed = self.db.execute(sql, args).rowcount == 1
            if changed:
                self.db.execute("UPDATE sessions SET state = ? WHERE id = ?", [state, rid])
        return changed

    def is_known(self, rid: str) -> bool:
        """Whether `rid` (any case) is a request of this controller's, in any state."""
        sql = "SELECT 1 FROM requests WHERE lower(id) = ?"
        return self.db.execute(sql, [rid.lower()]).fetchone() is not None

    def is_live(self, rid: str) -> bool:
        """Whether `rid` (any case: labels and role names carry it lowercased) is live now."""
        sql = f"SELECT 1 FROM requests WHERE lower(id) = ? AND state IN ({_marks(LIVE)})"  # noqa: S608
        return self.db.execute(sql, [rid.lower(), *LIVE]).fetchone() is not None

    def ids(self, states: tuple[str, ...], operator_fingerprint: str | None = None) -> list[str]:
        sql = f"SELECT id FROM requests WHERE state IN ({_marks(states)})"  # noqa: S608
        args: list[Any] = list(states)
        if operator_fingerprint is not None:
            sql += " AND operator_fingerprint = ?"
            args.append(operator_fingerprint)
        return [r[0] for r in self.db.execute(sql + " ORDER BY id", args).fetchall()]

    def all_ids(self, operator_fingerprint: str | None = None, limit: int = 500) -> list[str]:
        sql = "SELECT id FROM requests"
        args: list[Any] = []
        if operator_fingerprint is not None:
            sql += " WHERE operator_fingerprint = ?"
            args.append(operator_fingerprint)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [r[0] for r in self.db.execute(sql, args).fetchall()]

    # approvals --------------------------------------------------------------------------
    def approval_used(self, digest: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM approvals WHERE digest = ?", [digest]).fetchone()
            is not None
        )

    def insert_approval(
        self, signed: Signed, approval: Approval, approver: str, now: datetime
    ) -> None:
        self.db.execute(
            "INSERT INTO approvals (digest, request_id, approver, approver_fingerprint, decision,"
            " payload, signature, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                signed.digest,
                approval.request_id,
                approver,
                approval.approver_fingerprint,
                approval.decision,
                signed.payload,
                signed.signature,
                utc_text(now),
            ],
        )

    def approvals(self, rid: str) -> list[tuple[str, Approval]]:
        rows = self.db.execute(
            "SELECT approver, payload, signature FROM approvals WHERE request_id = ?"
            " ORDER BY received_at, digest",
            [rid],
        ).fetchall()
        return [(name, Signed(bytes(p), s).decode(Approval)) for name, p, s in rows]

    # sessions ---------------------------------------------------------------------------
    def create_session(self, rid: str, approved_duration: int) -> None:
        self.db.execute(
            "INSERT INTO sessions (id, request_id, state, approved_duration)"
            " VALUES (?, ?, 'activating', ?)",
            [rid, rid, approved_duration],
        )

    def session(self, rid: str) -> dict[str, Any] | None:
        cursor = self.db.execute("SELECT * FROM sessions WHERE id = ?", [rid])
        values = cursor.fetchone()
        if values is None:
            return None
        return dict(zip([c[0] for c in cursor.description], values, strict=True))

    def activate(self, rid: str, activated_at: datetime, expires_at: datetime) -> None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE sessions SET activated_at = ?, expires_at = ? WHERE id = ?",
                [utc_text(activated_at), utc_text(expires_at), rid],
            )
            self.set_state(rid, "active", activated_at)

    def finish_session(self, rid: str, ended_at: datetime, reason: str, receipt: Signed) -> None:
        self.db.execute(
            "UPDATE sessions SET ended_at = ?, ended_reason = ?, receipt_payload = ?,"
            " receipt_signature = ? WHERE id = ?",
            [utc_text(ended_at), reason, receipt.payload, receipt.signature, rid],
        )

    def receipt(self, rid: str) -> Signed | None:
        session = self.session(rid)
        if session is None or session["receipt_payload"] is None:
            return None
        return Signed(bytes(session["receipt_payload"]), session["receipt_signature"])

    # plane steps ------------------------------------------------------------------------
    def add_step(
        self,
        session_id: str,
        plane: str,
        provider: str,
        action: str,
        kind: str,
        name: str,
        detail: dict[str, Any],
        now: datetime,
    ) -> int:
        with transaction(self.db):
            cursor = self.db.execute(
                "INSERT INTO plane_steps (session_id, plane, provider, action, artifact_kind,"
                " artifact_name, state, detail, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'intent', ?, ?, ?)",
                [
                    session_id,
                    plane,
                    provider,
                    action,
                    kind,
                    name,
                    json.dumps(detail),
                    utc_text(now),
                    utc_text(now),
                ],
            )
        step_id = cursor.lastrowid
        assert step_id is not None
        return step_id

    def finish_step(self, step_id: int, state: str, detail: dict[str, Any], now: datetime) -> None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE plane_steps SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
                [state, json.dumps(detail), utc_text(now), step_id],
            )

    def steps(self, session_id: str) -> list[Step]:
        rows = self.db.execute(
            "SELECT id, session_id, plane, provider, action, artifact_kind, artifact_name,"
            " state, detail, created_at, updated_at FROM plane_steps WHERE session_id = ?"
            " ORDER BY id",
            [session_id],
        ).fetchall()
        return [
            Step(
                id=row[0],
                session_id=row[1],
                plane=row[2],
                provider=row[3],
                action=row[4],
                artifact_kind=row[5],
                artifact_name=row[6],
                state=row[7],
                detail=json.loads(row[8] or "{}"),
                created_at=row[9],
                updated_at=row[10],
            )
            for row in rows
        ]
