"""The session lifecycle of DESIGN §3, as the controller enforces it.

Pending --approve(signed)--> Activating --all planes ready--> Active --expiry|end|revoke-->
Ending --> Ended; Pending can also become Rejected, Cancelled or Expired, and Activating
becomes Failed (every plane rolled back) when a plane fails. Every decision here is audited,
refusals included, and nothing is minted unless every signature checks out.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bgtui.protocol.errors import Refused
from bgtui.protocol.httpsig import Caller
from bgtui.protocol.keys import PublicKey
from bgtui.protocol.objects import Approval, Request, Signed
from bgtui.protocol.timefmt import now_utc, parse_utc, utc_text
from bgtui.protocol.trust import TrustEntry, TrustStore
from bgtui.protocol.verify import verify
from controller.audit import AuditItem, AuditLog
from controller.config import Resource
from controller.events import Event, EventBroker
from controller.home import ControllerHome
from controller.ledger import FINAL, LIVE, Ledger, NotFound
from controller.notify import WebhookNotifier, approval_link
from controller.orchestrator import Orchestrator
from controller.planes import providers_for
from controller.planes.base import PlaneError
from controller.planes.credential.recipe import expected_command
from controller.recordings import (
    RECORDING_GRACE,
    SHA256,
    AuditReader,
    RecordingFiles,
    asciicast_problem,
)
from controller.scheduler import DeadlineScheduler
from controller.store import open_store, transaction

log = logging.getLogger("bgctl.lifecycle")
CLOCK_SKEW = 60
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


class Denied(Refused):
    """A refused call, with the HTTP status that fits it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Controller:
    """The controller's domain service: every lifecycle operation, independent of HTTP."""

    def __init__(
        self,
        home: ControllerHome,
        *,
        clock: Callable[[], datetime] = now_utc,
        teardown_backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.home = home
        self.config = home.config
        self.clock = clock
        self.db = open_store(home.db_path)
        self.signer = home.signing_key()
        self.public_key = self.signer.public
        self.audit = AuditLog(self.db, self.config.id, self.signer, head_file=home.audit_head_path)
        self.ledger = Ledger(self.db)
        self.events = EventBroker()
        self.notifier = WebhookNotifier(self.config.webhooks, self._webhook_failed)
        self.scheduler = DeadlineScheduler(self._deadlines)
        self.orchestrator = Orchestrator(
            home.path,
            self.ledger,
            self.audit,
            self.config,
            self.signer,
            self.publish,
            clock,
            lambda rid, when: self.scheduler.add("expiry", rid, when),
            teardown_backoff,
        )
        self._trust: TrustStore | None = None
        self._trust_mtime = 0.0
        self._revision = 0

    # start and stop ---------------------------------------------------------------------
    async def start(self) -> None:
        """Reconciles what a previous run left mid-way, then starts the deadline clock."""
        self.audit.append("controller.start", "controller", {"key": self.public_key.fingerprint})
        for rid in self.ledger.ids(("activating",)):
            self.orchestrator.spawn(rid, self._rollback_after_restart(rid))
        self._end_every_active_session()
        for rid in self.ledger.ids(("ending",)):  # those just ended, and any a crash cut short
            self.orchestrator.spawn(rid, self.orchestrator.teardown(rid))
        for rid in self.ledger.ids(("pending",)):
            self.scheduler.add("window", rid, self._window_end(rid))
        self.scheduler.start()

    def _end_every_active_session(self) -> list[str]:
        """Moves every active session to `ending` (controller-restart) in one transaction."""
        now = self.clock()
        with transaction(self.db):
            live = self.ledger.ids(("active",))
            for rid in live:
                self.ledger.set_state(rid, "ending", now, ended_reason="controller-restart")
            reason = {"reason": "controller-restart"}
            self.audit.append_batch([("session.ending", "controller", reason, rid) for rid in live])
        return live

    async def _rollback_after_restart(self, rid: str) -> None:
        ctx = self.orchestrator.context(rid)
        await self.orchestrator.roll_back(rid, ctx, "controller restarted during activation")

    async def stop(self, grace: float = 10.0) -> None:
        """Tears down live sessions (reason controller-restart) for up to `grace` seconds."""
        for rid in self._end_every_active_session():
            self.orchestrator.spawn(rid, self.orchestrator.teardown(rid))
        await self.scheduler.stop()
        if not await self.orchestrator.wait_idle(grace):
            log.warning("shutting down with teardowns unfinished; the next start resumes them")
        await self.orchestrator.cancel_all()
        await self.notifier.drain(1.0)
        self.audit.append("controller.stop", "controller", {})
        self.events.close()
        self.db.close()

    # trust ------------------------------------------------------------------------------
    def trust(self) -> TrustStore:
        """The trust store, re-read when `bgctl trust` changed it while serving."""
        mtime = self.home.trust_path.stat().st_mtime
        if self._trust is None or mtime != self._trust_mtime:
            self._trust = self.home.trust()
            self._trust_mtime = mtime
        return self._trust

    def lookup(self, fingerprint: str) -> TrustEntry | None:
        return self.trust().by_fingerprint(fingerprint)

    # events -----------------------------------------------------------------------------
    def publish(self, rid: str) -> None:
        view = self.view(rid)
        self.events.publish({"type": "request", "request": view})

    @staticmethod
    def visible_to(caller: Caller) -> Callable[[Event], bool]:
        if caller.role == "operator":
            return lambda e: e.get("request", {}).get("operator_fingerprint") == caller.fingerprint
        return lambda e: True

    # refusals ---------------------------------------------------------------------------
    def refuse(
        self, status: int, event: str, caller: Caller | None, message: str, rid: str | None = None
    ) -> Denied:
        """Audits a refusal and returns the error to raise."""
        self.audit.append(
            event,
            caller.name if caller else "anonymous",
            {"reason": message, "fingerprint": caller.fingerprint if caller else None},
            session=rid,
        )
        return Denied(status, message)

    def _owned(self, rid: str, caller: Caller) -> dict[str, Any]:
        try:
            row = self.ledger.row(rid)
        except NotFound:
            raise Denied(404, f"no request {rid!r}") from None
        if caller.role == "operator" and row["operator_fingerprint"] != caller.fingerprint:
            raise Denied(404, f"no request {rid!r}")
        return row

    # reads ------------------------------------------------------------------------------
    def resources(self) -> list[dict[str, Any]]:
        result = []
        for resource in self.config.resources:
            item = resource.describe()
            item["session_key"] = resource.kind == "ssh" and resource.credential == "controller"
            try:
                if resource.credential == "command":
                    item["commands"] = {
                        p: expected_command(resource, p, self.home.path)
                        for p in resource.privileges
                    }
                item["planes"] = [
                    {"plane": p.plane, "provider": p.name, "does": p.prepare(resource, None)}
                    for p in providers_for(resource, self.config, self.home.path)
                ]
                item["available"] = True
            except PlaneError as exc:
                item["planes"] = []
                item["available"] = False
                item["unavailable_reason"] = str(exc)
            result.append(item)
        return result

    def info(self) -> dict[str, Any]:
        return {
            "controller_id": self.config.id,
            "key": self.public_key.openssh(self.config.id),
            "fingerprint": self.public_key.fingerprint,
            "request_window": self.config.request_window,
            "max_duration": self.config.max_duration,
            "approvals_required": self.config.approvals_required,
        }

    def requests(self, caller: Caller) -> list[dict[str, Any]]:
        fingerprint = caller.fingerprint if caller.role == "operator" else None
        return [self.view(rid) for rid in self.ledger.all_ids(fingerprint)]

    def get(self, rid: str, caller: Caller) -> dict[str, Any]:
        self._owned(rid, caller)
        return self.view(rid)

    def _next_revision(self) -> int:
        """A number that grows with every view computed: wall-clock nanoseconds, never less
        than one more than the last.

        Views are computed on the controller's single event loop, so a later revision shows a
        later state. Clients keep, per request, the view with the highest revision, whatever
        order views reach them in (an action's answer can arrive after a newer event). It
        orders the views of one controller, across restarts too as long as its clock does not
        go backwards; `updated_at` can't (one-second resolution).
        """
        self._revision = max(self._revision + 1, time.time_ns())
        return self._revision

    def view(self, rid: str) -> dict[str, Any]:
        """The request and its session as every client shows them (DESIGN §9 --json)."""
        revision = self._next_revision()
        row = self.ledger.row(rid)
        signed, req = self.ledger.request(rid)
        session = self.ledger.session(rid)
        approvals = self.ledger.approvals(rid)
        approvers = {a.approver_fingerprint for _, a in approvals if a.approves}
        receipt = self.ledger.receipt(rid)
        steps = self.ledger.steps(rid)
        view: dict[str, Any] = {
            "id": rid,
            "controller_id": req.controller_id,
            "resource": req.resource,
            "privilege": req.privilege,
            "credential_source": req.credential_source,
            "network_path": req.network_path,
            "command": req.command,
            "reason": req.reason,
            "state": row["state"],
            "operator": row["operator"],
            "operator_fingerprint": row["operator_fingerprint"],
            "requested_duration": req.requested_duration,
            "approved_duration": session["approved_duration"] if session else None,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "window_ends_at": utc_text(self._window_end(rid))
            if row["state"] == "pending"
            else None,
            "activated_at": session["activated_at"] if session else None,
            "expires_at": session["expires_at"] if session else None,
            "ended_at": session["ended_at"] if session else None,
            "ended_reason": row["ended_reason"],
            "detail": row["detail"],
            "digest": signed.digest,
            "request": signed.to_json(),
            "approvals": [
                {
                    "approver": name,
                    "fingerprint": a.approver_fingerprint,
                    "decision": a.decision,
                    "duration": a.approved_duration,
                    "reason": a.reason,
                    "signed_at": a.signed_at,
                }
                for name, a in approvals
            ],
            "approvals_required": self.config.approvals_required,
            "approvals_needed": max(0, self.config.approvals_required - len(approvers)),
            "planes": [
                {
                    "plane": s.plane,
                    "provider": s.provider,
                    "action": s.action,
                    "kind": s.artifact_kind,
                    "name": s.artifact_name,
                    "state": s.state,
                    "error": s.detail.get("error"),
                    "attempt": s.detail.get("attempt"),
                    "retry_in": s.detail.get("retry_in"),
                }
                for s in steps
            ],
            "receipt": receipt.to_json() if receipt else None,
            "has_credential": self.orchestrator.sealed_credential(rid) is not None,
            "approval_link": approval_link(self.config.public_url, self.config.id, rid),
            "revision": revision,
        }
        return view

    def _window_end(self, rid: str) -> datetime:
        created = parse_utc(self.ledger.row(rid)["created_at"])
        return created + timedelta(seconds=self.config.request_window)

    # submit -----------------------------------------------------------------------------
    def submit(self, body: Any, caller: Caller) -> dict[str, Any]:
        """Accepts a signed request after every check; refusals are audited and change nothing."""
        if caller.role != "operator":
            raise self.refuse(403, "request.refused", caller, "only operators may submit requests")
        now = self.clock()
        verdict = verify(body, Request, controller_id=self.config.id, trust=self.trust(), now=now)
        if not verdict.accepted:
            raise self.refuse(
                422,
                "request.refused",
                caller,
                f"request refused ({verdict.reason}): {verdict.detail}",
            )
        signed = Signed.from_json(body)
        req: Request = verdict.obj
        problem = self._check_request(req, signed, caller, now)
        if problem:
            raise self.refuse(422, "request.refused", caller, f"request refused: {problem}")
        with transaction(self.db):
            self.ledger.insert_request(signed, req, caller.name, now)
            self.audit.append(
                "request.submitted",
                caller.name,
                {
                    "resource": req.resource,
                    "privilege": req.privilege,
                    "duration": req.requested_duration,
                    "reason": req.reason,
                    "operator": caller.fingerprint,
                    "digest": signed.digest,
                    "request": signed.to_json(),
                },
                session=req.id,
            )
        self.scheduler.add("window", req.id, self._window_end(req.id))
        self.publish(req.id)
        link = approval_link(self.config.public_url, self.config.id, req.id)
        self.notifier.notify(
            {
                "text": (
                    f"Break-glass request from {caller.name}: {req.privilege} on {req.resource}"
                    f" for {req.requested_duration // 60} min. Reason: {req.reason}. Review: {link}"
                ),
                "request_id": req.id,
                "controller_id": self.config.id,
                "resource": req.resource,
                "privilege": req.privilege,
                "duration": req.requested_duration,
                "reason": req.reason,
                "operator": caller.name,
                "operator_fingerprint": caller.fingerprint,
                "approval_link": link,
            }
        )
        return self.view(req.id)

    def _check_request(self, req: Request, signed: Signed, caller: Caller, now: datetime) -> str:
        if req.operator_fingerprint != caller.fingerprint:
            return "a request must be submitted by the operator who signed it"
        if not _ULID.fullmatch(req.id):
            return f"id {req.id!r} is not a ULID"
        if self.ledger.request_exists(req.id, signed.digest):
            return "replayed: this request (or its id) was already submitted"
        created = parse_utc(req.created_at)
        if created > now + timedelta(seconds=CLOCK_SKEW):
            return f"created_at {req.created_at} is in the future"
        # A request signed long ago and held back (by a relay, say) is refused; a short
        # request window must not make an ordinary slow submission stale.
        stale_after = max(self.config.request_window, 5 * CLOCK_SKEW)
        if created < now - timedelta(seconds=stale_after):
            return f"created_at {req.created_at} is older than the request window"
        try:
            resource = self.config.resource(req.resource)
        except Refused as exc:
            return str(exc)
        if req.privilege not in resource.privileges:
            offered = ", ".join(resource.privileges)
            return f"privilege {req.privilege!r} is not offered on {resource.name} ({offered})"
        if req.credential_source != resource.credential:
            return f"credential source {req.credential_source!r} does not apply to {resource.name}"
        if req.network_path != resource.network:
            return f"network path {req.network_path!r} is not how {resource.name} is reached"
        problem = self._check_command(req, resource)
        if problem:
            return problem
        if resource.kind == "ssh" and resource.credential == "controller":
            if not req.session_key:
                return "an SSH request must carry the operator's session public key"
            try:
                PublicKey.parse(req.session_key, "session_key")
            except Refused as exc:
                return str(exc)
        if req.requested_duration > self.config.max_duration:
            return (
                f"requested {req.requested_duration}s is longer than "
                f"max_duration {self.config.max_duration}s"
            )
        try:
            sealing_key = PublicKey.parse(req.operator_key, "operator_key")
        except Refused as exc:
            return str(exc)
        if sealing_key.fingerprint != caller.fingerprint:
            return "operator_key must be the operator's own key"
        try:
            providers_for(resource, self.config, self.home.path)
        except PlaneError as exc:
            return str(exc)
        return ""

    def _check_command(self, req: Request, resource: Resource) -> str:
        """A command-minted credential must name the recipe exactly as the controller has it."""
        if resource.credential != "command":
            return f"{resource.name} takes no command" if req.command is not None else ""
        try:
            expected = expected_command(resource, req.privilege, self.home.path)
        except Refused as exc:
            return str(exc)
        if req.command != expected:
            same = ("recipe", "sha256", "text")
            if not isinstance(req.command, dict) or any(
                req.command.get(k) != expected[k] for k in same
            ):
                return f"the request does not carry recipe {expected['recipe']} as it is now"
            return f"the request's recipe inputs differ from {resource.name}'s"
        return ""

    # decide -----------------------------------------------------------------------------
    def decide(self, rid: str, body: Any, caller: Caller) -> dict[str, Any]:
        """Records a signed approval or rejection; activates when enough approvals are in."""
        if caller.role != "approver":
            raise self.refuse(403, "approval.refused", caller, "only approvers may decide", rid)
        try:
            signed_request, _ = self.ledger.request(rid)
        except NotFound:
            raise self.refuse(404, "approval.refused", caller, f"no request {rid!r}") from None
        now = self.clock()
        verdict = verify(
            body,
            Approval,
            controller_id=self.config.id,
            trust=self.trust(),
            now=now,
            request=signed_request,
            already_used=self.ledger.approval_used,
        )
        if not verdict.accepted:
            raise self.refuse(
                422,
                "approval.refused",
                caller,
                f"approval refused ({verdict.reason}): {verdict.detail}",
                rid,
            )
        approval: Approval = verdict.obj
        signer = verdict.signer
        assert signer is not None
        state = self.ledger.state(rid)
        if state != "pending":
            raise self.refuse(
                409, "approval.refused", caller, f"request is {state}, not pending", rid
            )
        if approval.approves and approval.approved_duration > self.config.max_duration:
            raise self.refuse(
                422,
                "approval.refused",
                caller,
                f"approval refused: {approval.approved_duration}s exceeds max_duration",
                rid,
            )
        prior = self.ledger.approvals(rid)
        if any(a.approver_fingerprint == approval.approver_fingerprint for _, a in prior):
            raise self.refuse(
                409,
                "approval.refused",
                caller,
                f"{signer.name} has already decided; "
                f"{self.config.approvals_required} distinct approvers are required",
                rid,
            )
        signed = Signed.from_json(body)
        activate_for: int | None = None
        with transaction(self.db):
            self.ledger.insert_approval(signed, approval, signer.name, now)
            record = {
                "decision": approval.decision,
                "approver": signer.fingerprint,
                "duration": approval.approved_duration,
                "reason": approval.reason,
                "approval": signed.to_json(),
            }
            self.audit.append(f"approval.{approval.decision}", signer.name, record, session=rid)
            if not approval.approves:
                self.ledger.set_state(
                    rid, "rejected", now, ended_reason=f"rejected: {approval.reason}"
                )
            else:
                approvals = [a for _, a in prior if a.approves] + [approval]
                if len(approvals) >= self.config.approvals_required:
                    activate_for = min(a.approved_duration for a in approvals)
                    self.ledger.set_state(rid, "activating", now)
                    self.ledger.create_session(rid, activate_for)
                    self.audit.append(
                        "session.activating", "controller", {"duration": activate_for}, session=rid
                    )
        if activate_for is not None:
            self.scheduler.cancel("window", rid)
            self.orchestrator.spawn(rid, self.orchestrator.activate(rid, activate_for))
        elif not approval.approves:
            self.scheduler.cancel("window", rid)
        self.publish(rid)
        return self.view(rid)

    # operator and approver actions ------------------------------------------------------
    def withdraw(self, rid: str, caller: Caller) -> dict[str, Any]:
        row = self._owned(rid, caller)
        if caller.role != "operator" or row["operator_fingerprint"] != caller.fingerprint:
            raise self.refuse(
                403,
                "request.withdraw_refused",
                caller,
                "only the requesting operator may withdraw",
                rid,
            )
        now = self.clock()
        with transaction(self.db):
            if not self.ledger.set_state(
                rid, "cancelled", now, ended_reason="withdrawn by operator", expect=("pending",)
            ):
                raise Denied(
                    409, f"request is {row['state']}; only a pending request can be withdrawn"
                )
            self.audit.append("request.withdrawn", caller.name, {}, session=rid)
        self.scheduler.cancel("window", rid)
        self.publish(rid)
        return self.view(rid)

    def end(self, rid: str, caller: Caller) -> dict[str, Any]:
        row = self._owned(rid, caller)
        if caller.role != "operator" or row["operator_fingerprint"] != caller.fingerprint:
            raise self.refuse(
                403, "session.end_refused", caller, "only the session's operator may end it", rid
            )
        return self._begin_ending(
            rid, "ended by operator", caller.name, "session.ended_by_operator"
        )

    def revoke(self, rid: str, caller: Caller) -> dict[str, Any]:
        if caller.role != "approver":
            raise self.refuse(
                403, "session.revoke_refused", caller, "only approvers may revoke", rid
            )
        self._owned(rid, caller)
        return self._begin_ending(rid, "revoked by customer", caller.name, "session.revoked")

    def _begin_ending(self, rid: str, reason: str, actor: str, event: str) -> dict[str, Any]:
        now = self.clock()
        with transaction(self.db):
            if not self.ledger.set_state(rid, "ending", now, ended_reason=reason, expect=LIVE[:2]):
                state = self.ledger.state(rid)
                raise Denied(
                    409, f"session is {state}; only an activating or active session can end"
                )
            self.audit.append(event, actor, {"reason": reason}, session=rid)
        self.scheduler.cancel("expiry", rid)
        # An activation still in flight is cancelled; the intents it wrote tell the teardown
        # (which runs after it) what may exist.
        self.orchestrator.cancel(rid)
        self.orchestrator.spawn(rid, self.orchestrator.teardown(rid))
        self.publish(rid)
        return self.view(rid)

    def credentials(self, rid: str, caller: Caller) -> dict[str, Any]:
        row = self._owned(rid, caller)
        if caller.role != "operator" or row["operator_fingerprint"] != caller.fingerprint:
            raise self.refuse(
                403,
                "credentials.refused",
                caller,
                "credentials go only to the session's operator",
                rid,
            )
        if row["state"] != "active":
            raise Denied(
                409, f"session is {row['state']}; credentials exist only while it is active"
            )
        sealed = self.orchestrator.sealed_credential(rid)
        self.audit.append(
            "credentials.fetched", caller.name, {"minted": sealed is not None}, session=rid
        )
        return {
            "id": rid,
            "credential_source": self.ledger.request(rid)[1].credential_source,
            "sealed": base64.b64encode(sealed).decode() if sealed else None,
        }

    # audit reads and recordings ---------------------------------------------------------
    def audit_page(
        self, caller: Caller, after: int, limit: int, session: str | None = None
    ) -> dict[str, Any]:
        """Entries after seq `after`: the whole log for approvers and auditors; an operator
        reads only the entries of a session of their own (`session`)."""
        if session is None and caller.role == "operator":
            raise self.refuse(
                403,
                "audit.read_refused",
                caller,
                "operators may read only their own sessions' audit entries (?session=ID)",
            )
        if session is not None and caller.role == "operator":
            self._owned(session, caller)
        return AuditReader(self.db).page(after, limit, session)

    def audit_checkpoints(self, after_size: int, limit: int) -> list[dict[str, Any]]:
        """Signed checkpoints (size and head only, so any pinned caller may read them)."""
        return AuditReader(self.db).checkpoints(after_size, limit)

    def audit_head(self) -> dict[str, Any]:
        """The newest signed checkpoint."""
        head = AuditReader(self.db).head()
        if head is None:
            raise Denied(404, "the audit log has no checkpoint yet")
        return head

    def upload_recording(self, rid: str, caller: Caller, data: bytes) -> dict[str, Any]:
        """Stores the session's asciicast recording by its SHA-256 and audits the upload.

        Only the session's operator, while it is active or ending or for RECORDING_GRACE
        seconds after it ended. The same bytes uploaded again are accepted once.
        """
        row = self._owned(rid, caller)
        if caller.role != "operator" or row["operator_fingerprint"] != caller.fingerprint:
            raise self.refuse(
                403,
                "recording.refused",
                caller,
                "only the session's operator may upload its recordings",
                rid,
            )
        state = row["state"]
        if state not in ("active", "ending"):
            session = self.ledger.session(rid)
            ended_at = session["ended_at"] if session else None
            late = ended_at is None or self.clock() > parse_utc(ended_at) + timedelta(
                seconds=RECORDING_GRACE
            )
            if state != "ended" or late:
                raise self.refuse(
                    409,
                    "recording.refused",
                    caller,
                    f"session is {state}; recordings are accepted while it is active and for "
                    f"{RECORDING_GRACE // 60} minutes after it ends",
                    rid,
                )
        problem = asciicast_problem(data)
        if problem:
            raise self.refuse(
                422, "recording.refused", caller, f"not an asciicast v2 recording: {problem}", rid
            )
        sha256 = hashlib.sha256(data).hexdigest()
        reader = AuditReader(self.db)
        for known in reader.recordings(rid):
            if known["sha256"] == sha256:
                return known
        RecordingFiles(self.home.path / "recordings").save(rid, sha256, data)
        self.audit.append(
            "recording.uploaded", caller.name, {"sha256": sha256, "bytes": len(data)}, session=rid
        )
        return reader.recordings(rid)[-1]

    def recordings(self, rid: str, caller: Caller) -> list[dict[str, Any]]:
        """The session's recordings: [{sha256, bytes, at}] (operators: their own sessions)."""
        self._owned(rid, caller)
        return AuditReader(self.db).recordings(rid)

    def recording(self, sha256: str, caller: Caller) -> bytes:
        """A recording's exact bytes, for approvers, auditors and the session's operator."""
        rid = AuditReader(self.db).recording_session(sha256) if SHA256.fullmatch(sha256) else None
        if rid is None:
            raise Denied(404, f"no recording {sha256!r}")
        self._owned(rid, caller)
        data = RecordingFiles(self.home.path / "recordings").read(rid, sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Denied(409, f"recording {sha256} on disk no longer matches its audited SHA-256")
        self.audit.append("recording.downloaded", caller.name, {"sha256": sha256}, session=rid)
        return data

    # deadlines --------------------------------------------------------------------------
    async def _deadlines(self, due: list[tuple[str, str]]) -> None:
        """Expires pending requests and begins teardown of expired sessions, all in one batch."""
        now = self.clock()
        ending: list[str] = []
        with transaction(self.db):
            items: list[AuditItem] = []
            for kind, rid in due:
                if kind == "window" and self.ledger.set_state(
                    rid, "expired", now, ended_reason="request window passed", expect=("pending",)
                ):
                    items.append(("request.expired", "controller", {}, rid))
                elif kind == "expiry" and self.ledger.set_state(
                    rid, "ending", now, ended_reason="expired", expect=("active",)
                ):
                    ending.append(rid)
                    items.append(("session.expired", "controller", {}, rid))
            if items:
                self.audit.append_batch(items)
        for rid in ending:
            self.orchestrator.spawn(rid, self.orchestrator.teardown(rid))
        for _, rid in due:
            self.publish(rid)

    def _webhook_failed(self, url: str, error: str) -> None:
        self.audit.append("webhook.failed", "controller", {"url": url, "error": error})


__all__ = ["FINAL", "Controller", "Denied"]
