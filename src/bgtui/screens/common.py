"""What every screen shares: reading views (state, age, time left) and signing new objects.

The helpers here are plain functions of the controller's JSON views (DESIGN §9) and the
protocol objects; no Textual, so they are tested like the command line's `sessionview`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ulid import ULID

from bgtui.client import FINAL_STATES, View, verified_request
from bgtui.identity import Identity
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Approval, Request, Signed, new_approval, new_nonce
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import format_duration, parse_utc, utc_text
from bgtui.session_keys import session_key

Resource = dict[str, Any]
LIVE_STATES = ("activating", "active", "ending")
CONNECTABLE_KINDS = ("ssh", "kubernetes", "postgres", "service")

STATE_LABELS = {
    "pending": "Pending",
    "activating": "Activating",
    "active": "Active",
    "ending": "Ending",
    "ended": "Ended",
    "rejected": "Rejected",
    "cancelled": "Cancelled",
    "expired": "Expired",
    "failed": "Failed",
}


def state_label(view: View) -> str:
    """`Active`, `Pending`… as the screens show a state."""
    state = str(view.get("state"))
    return STATE_LABELS.get(state, state)


def is_final(view: View) -> bool:
    return view.get("state") in FINAL_STATES


def seconds_until(text: str | None, now: datetime) -> int | None:
    """Whole seconds from `now` until the UTC time `text` (negative once past), or None."""
    if not text:
        return None
    try:
        return int((parse_utc(text) - now).total_seconds())
    except Refused:
        return None


def left_text(text: str | None, now: datetime) -> str:
    """`9m12s left`, `due now` or `-`."""
    left = seconds_until(text, now)
    if left is None:
        return "-"
    return f"{format_duration(left)} left" if left > 0 else "due now"


def age_text(created_at: str | None, now: datetime) -> str:
    """How long ago: `3m20s`, or `0s` for the future."""
    left = seconds_until(created_at, now)
    return "-" if left is None else format_duration(max(0, -left))


def duration_text(seconds: Any) -> str:
    return format_duration(seconds) if isinstance(seconds, int) and seconds > 0 else "-"


def note_text(view: View, now: datetime) -> str:
    """What a row says next to the state: time left, approvals needed, or why it ended."""
    state = view.get("state")
    if state == "active":
        return left_text(view.get("expires_at"), now)
    if state == "pending":
        needed = view.get("approvals_needed")
        return f"{needed} approval(s) needed" if needed else "waiting"
    if state == "activating":
        steps = view.get("planes") or []
        done = sum(1 for s in steps if s.get("state") == "done")
        return f"setting up planes ({done}/{len(steps)} steps done)"
    return str(view.get("ended_reason") or view.get("detail") or "")


def newest_first(views: list[View]) -> list[View]:
    """ULIDs sort by creation time, so the id orders requests newest first."""
    return sorted(views, key=lambda v: str(v.get("id")), reverse=True)


def build_request(
    *,
    identity: Identity,
    key: PrivateKey | None,
    signer: Signer,
    controller_id: str,
    resource: Resource,
    privilege: str,
    credential_source: str,
    duration: int,
    reason: str,
    now: datetime,
) -> Signed:
    """The operator-signed request for `resource`, as `bgtui request` builds it."""
    rid = str(ULID())
    command = (resource.get("commands") or {}).get(privilege)
    ssh_key = None
    if resource.get("session_key"):
        if key is None:
            raise Refused(
                f"identity {identity.name}: an SSH session needs a key bgtui can derive the "
                "session key from; ssh-agent keys cannot; use a file, env or command source"
            )
        ssh_key = session_key(key, rid).public.openssh(f"bgtui-session-{rid}")
    req = Request(
        id=rid,
        controller_id=controller_id,
        resource=str(resource.get("name")),
        privilege=privilege,
        credential_source=credential_source,
        network_path=str(resource.get("network")),
        command=command,
        requested_duration=duration,
        reason=reason.strip(),
        operator_fingerprint=identity.fingerprint,
        operator_key=identity.public.openssh(),
        session_key=ssh_key,
        created_at=utc_text(now),
        nonce=new_nonce(),
    )
    req.check()
    return req.sign(signer)


def build_decision(
    view: View,
    *,
    identity: Identity,
    controller_id: str,
    decision: str,
    duration: int | None,
    reason: str,
) -> Approval:
    """An approval or rejection of the request in `view`, after checking its signature."""
    signed, req = verified_request(view)
    if req.controller_id != controller_id:
        raise Refused(
            f"request {req.id} is for controller {req.controller_id!r}, this is {controller_id!r}"
        )
    if view.get("state") != "pending":
        raise Refused(f"request {req.id} is {view.get('state')}; only a pending one can be decided")
    if duration is not None and duration > req.requested_duration:
        raise Refused(
            f"{format_duration(duration)} is longer than the "
            f"{format_duration(req.requested_duration)} requested; an approval may only shorten"
        )
    approval = new_approval(
        signed,
        req,
        approver_fingerprint=identity.fingerprint,
        decision=decision,
        duration=(duration or req.requested_duration) if decision == "approve" else None,
        reason=reason,
    )
    approval.check()
    return approval
