"""Signing what a user decides: a request from a catalog entry, an approval or a rejection.

The command line (`bgtui request`, `approve`, `reject`) and the TUI both build their signed
objects here, so the two check the same things in the same words. No Textual and no click:
callers turn `Refused` into a line on stderr or a message on screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bgtui.client import View, verified_request
from bgtui.identity import Identity
from bgtui.protocol.errors import Refused
from bgtui.protocol.keys import PrivateKey
from bgtui.protocol.objects import Request, Signed, new_approval, new_nonce
from bgtui.protocol.sshsig import Signer
from bgtui.protocol.timefmt import format_duration, utc_text
from bgtui.session_keys import session_key

Resource = dict[str, Any]
"""One catalog entry as `/v1/resources` lists it."""


def offered_choice(resource: Resource, key: str, given: str | None, what: str, option: str) -> str:
    """`given` if the resource offers it, else its only offer; `option` names how to choose."""
    offered = [str(v) for v in resource.get(key) or []]
    name = resource.get("name")
    if given is not None:
        if given not in offered:
            raise Refused(
                f"{name} does not offer {what} {given!r}; it offers: {', '.join(offered)}"
            )
        return given
    if len(offered) == 1:
        return offered[0]
    raise Refused(f"{name} offers several {what}s ({', '.join(offered)}); choose one with {option}")


def build_request(
    *,
    identity: Identity,
    key: PrivateKey | None,
    signer: Signer,
    controller_id: str,
    resource: Resource,
    privilege: str | None,
    credential_source: str | None,
    duration: int,
    reason: str,
    now: datetime,
) -> Signed:
    """The operator-signed request for `resource`.

    The privilege must be one the resource offers (None: its only one); the credential source
    is checked, not chosen. An SSH resource gets a session key derived from `key`.
    """
    chosen = offered_choice(resource, "privileges", privilege, "privilege", "--privilege")
    source = offered_choice(
        resource,
        "credential_sources",
        credential_source,
        "credential source",
        "--credential-source",
    )
    from ulid import ULID  # deferred: only signing a request needs it, not the TUI's start

    rid = str(ULID())
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
        privilege=chosen,
        credential_source=source,
        network_path=str(resource.get("network")),
        command=(resource.get("commands") or {}).get(chosen),
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


@dataclass(frozen=True)
class Decidable:
    """A pending request whose operator signature checked out, and the time an approval grants."""

    signed: Signed
    request: Request
    granted: int


def decidable(
    view: View, *, controller_id: str, duration: int | None, duration_option: str = ""
) -> Decidable:
    """The request in `view` if this controller's approver may decide it now.

    Its signature is checked; it must be pending and for `controller_id`. `duration` may only
    shorten what was asked (None: grant all of it); `duration_option` prefixes that refusal.
    """
    signed, req = verified_request(view)
    if req.controller_id != controller_id:
        raise Refused(
            f"request {req.id} is for controller {req.controller_id!r}, this is {controller_id!r}"
        )
    if view.get("state") != "pending":
        raise Refused(f"request {req.id} is {view.get('state')}; only a pending one can be decided")
    if duration is not None and duration > req.requested_duration:
        raise Refused(
            f"{duration_option}{format_duration(duration)} is longer than the "
            f"{format_duration(req.requested_duration)} requested; an approval may only shorten"
        )
    return Decidable(signed, req, duration or req.requested_duration)


def sign_decision(
    checked: Decidable, *, identity: Identity, signer: Signer, decision: str, reason: str
) -> Signed:
    """The approver's signed approval (for `checked.granted`) or rejection."""
    approval = new_approval(
        checked.signed,
        checked.request,
        approver_fingerprint=identity.fingerprint,
        decision=decision,
        duration=checked.granted if decision == "approve" else None,
        reason=reason,
    )
    approval.check()
    return approval.sign(signer)
