"""How requests, sessions and the catalog read as text in the command line (`show`, `list`…).

Pure functions from the controller's JSON views (and verified signed objects) to lines; no
I/O, so they are easy to test and the commands stay thin.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bgtui.protocol.objects import Request, TeardownReceipt
from bgtui.protocol.timefmt import format_duration, now_utc, parse_utc

View = dict[str, Any]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    everything = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[col]) for row in everything) for col in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in everything
    ]


def _duration(seconds: Any) -> str:
    return format_duration(seconds) if isinstance(seconds, int) else "-"


def time_left(expires_at: str, now: datetime | None = None) -> str:
    """`9m12s left` until `expires_at`, or `due now` once it has passed."""
    left = int((parse_utc(expires_at) - (now or now_utc())).total_seconds())
    return f"{format_duration(left)} left" if left > 0 else "due now"


def state_line(view: View, now: datetime | None = None) -> str:
    """One line for a state: `active  until …Z (9m left)`, `rejected  rejected: reason`."""
    state = str(view.get("state"))
    if state == "active" and view.get("expires_at"):
        expires = str(view["expires_at"])
        return f"active  until {expires} ({time_left(expires, now)})"
    if state == "pending":
        needed = view.get("approvals_needed")
        return f"pending  {needed} approval(s) needed" if needed else "pending"
    said = view.get("ended_reason") or view.get("detail")
    if not said:
        return state
    return str(said) if str(said).startswith(f"{state}:") else f"{state}  {said}"


def outcome(view: View) -> str:
    """How a request ended, for one line: `rejected: use the replica`, `expired: …`."""
    state = str(view.get("state"))
    said = str(view.get("ended_reason") or view.get("detail") or "")
    if not said or said.startswith(f"{state}:"):
        return said or state
    return f"{state}: {said}"


def resources_table(resources: list[dict[str, Any]]) -> list[str]:
    """The catalog: name, kind, network path, credential source(s), privileges, description."""
    rows = []
    for item in resources:
        description = str(item.get("description") or "")
        if item.get("available") is False:
            description = f"(unavailable: {item.get('unavailable_reason', '?')}) {description}"
        rows.append(
            (
                str(item.get("name")),
                str(item.get("kind")),
                str(item.get("network")),
                ",".join(item.get("credential_sources") or []),
                ",".join(item.get("privileges") or []),
                description.strip(),
            )
        )
    header = ("NAME", "KIND", "NETWORK", "CREDENTIAL", "PRIVILEGES", "DESCRIPTION")
    return table(header, rows)


def requests_table(views: list[View], now: datetime | None = None) -> list[str]:
    """One row per request: id, state, resource, privilege, operator, duration, and what next."""
    rows = []
    for view in views:
        state = str(view.get("state"))
        if state == "active" and view.get("expires_at"):
            note = time_left(str(view["expires_at"]), now)
        elif state == "pending":
            note = f"{view.get('approvals_needed')} approval(s) needed"
        else:
            note = str(view.get("ended_reason") or view.get("detail") or "")
        duration = view.get("approved_duration") or view.get("requested_duration")
        rows.append(
            (
                str(view.get("id")),
                state,
                str(view.get("resource")),
                str(view.get("privilege")),
                str(view.get("operator")),
                _duration(duration),
                note,
            )
        )
    header = ("ID", "STATE", "RESOURCE", "PRIVILEGE", "OPERATOR", "DURATION", "NOTE")
    return table(header, rows)


def _pairs(pairs: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs]


def show_lines(
    view: View, receipt: TeardownReceipt | None, receipt_note: str, now: datetime | None = None
) -> list[str]:
    """Everything `bgtui show` prints about one request and its session."""
    requested = view.get("requested_duration")
    approved = view.get("approved_duration")
    durations = f"requested {_duration(requested)}"
    if isinstance(approved, int):
        durations += f", approved {_duration(approved)}"
    pairs: list[tuple[str, str]] = [
        ("request", str(view.get("id"))),
        ("state", state_line(view, now)),
        ("resource", str(view.get("resource"))),
        ("privilege", str(view.get("privilege"))),
        ("network path", str(view.get("network_path"))),
        ("credential", str(view.get("credential_source"))),
        ("reason", str(view.get("reason"))),
        ("operator", f"{view.get('operator')} {view.get('operator_fingerprint')}"),
        ("duration", durations),
        ("created", str(view.get("created_at"))),
    ]
    if view.get("window_ends_at"):
        pairs.append(("window ends", str(view["window_ends_at"])))
    if view.get("activated_at"):
        pairs.append(("activated", str(view["activated_at"])))
    if view.get("expires_at"):
        expires = str(view["expires_at"])
        if view.get("state") == "active":
            expires += f" ({time_left(expires, now)})"
        pairs.append(("expires", expires))
    if view.get("ended_at"):
        pairs.append(("ended", str(view["ended_at"])))
    if view.get("ended_reason"):
        pairs.append(("ended reason", str(view["ended_reason"])))
    lines = _pairs(pairs)
    approvals = view.get("approvals") or []
    lines.append(f"approvals ({len(approvals)}, {view.get('approvals_needed', 0)} more needed):")
    for a in approvals:
        granted = f" {_duration(a.get('duration'))}" if a.get("decision") == "approve" else ""
        said = f": {a['reason']}" if a.get("reason") else ""
        lines.append(
            f"  {a.get('decision')}{granted} by {a.get('approver')} {a.get('fingerprint')} "
            f"at {a.get('signed_at')}{said}"
        )
    planes = view.get("planes") or []
    if planes:
        lines.append("planes:")
    for step in planes:
        line = (
            f"  [{step.get('state')}] {step.get('action')} {step.get('plane')}/"
            f"{step.get('provider')} {step.get('kind')}: {step.get('name')}"
        )
        if step.get("error"):
            line += f"; error: {step['error']}"
        if step.get("retry_in") is not None:
            line += f"; attempt {step.get('attempt')}, retry in {step['retry_in']}s"
        lines.append(line)
    if receipt is not None or receipt_note:
        lines.append(f"receipt: {receipt_note}")
    if receipt is not None:
        if not receipt.artifacts:
            lines.append("  nothing was minted for this session")
        for artifact in receipt.artifacts:
            lines.append(
                f"  {artifact.get('plane')} {artifact.get('kind')} {artifact.get('name')}: "
                f"created {artifact.get('created_at')}, removed {artifact.get('removed_at')} "
                f"({artifact.get('how')})"
            )
    return lines


def decision_lines(
    req: Request,
    *,
    digest: str,
    operator_name: str,
    decision: str,
    duration: int,
    approvals_needed: int,
) -> list[str]:
    """What an approval (or rejection) signs, from the operator-signed request itself."""
    if decision == "approve":
        granted = format_duration(duration)
        if duration < req.requested_duration:
            granted += f" (shortened from {format_duration(req.requested_duration)})"
        granted += ", counted from activation"
    else:
        granted = f"none (asked for {format_duration(req.requested_duration)})"
    credential = req.credential_source
    if credential == "out-of-band":
        credential += " (break glass mints no credential; the operator brings their own)"
    after = max(0, approvals_needed - 1) if decision == "approve" else 0
    pairs: list[tuple[str, str]] = [
        ("controller", req.controller_id),
        ("request", req.id),
        ("resource", req.resource),
        ("privilege", req.privilege),
        ("duration", granted),
        ("network path", req.network_path),
        ("credential", credential),
        ("reason", req.reason),
        ("operator", f"{operator_name} {req.operator_fingerprint}"),
        ("created", req.created_at),
        ("digest", digest),
    ]
    if req.session_key:
        pairs.append(("session key", req.session_key))
    if decision == "approve":
        pairs.append(
            (
                "approvals",
                f"{after} more needed after this one"
                if after
                else "this approval activates the session",
            )
        )
    lines = _pairs(pairs)
    if req.command is not None:
        lines.extend(command_lines(req.command))
    return lines


def _visible(text: str) -> str:
    """`text` as is, except control characters (which could hide or fake text on a terminal),
    shown as escapes."""
    return "".join(
        c if c == "\t" or c.isprintable() else c.encode("unicode_escape").decode() for c in text
    )


def command_lines(command: dict[str, Any]) -> list[str]:
    """The command a request carries, for an approver: recipe, hash, its text verbatim (line by
    line, indented four spaces), then every input as `name = value`, one per line."""
    lines = ["command (runs exactly as written):"]
    text = command.get("text")
    inputs = command.get("inputs")
    for key in sorted(command):
        if key in ("text", "inputs"):
            continue
        value = command[key]
        lines.append(f"  {key}: {_visible(value if isinstance(value, str) else repr(value))}")
    if isinstance(text, str):
        lines.append("  text (verbatim; its sha256 is what the approval binds):")
        lines.extend(f"    {_visible(line)}" if line else "" for line in text.split("\n"))
    elif text is not None:
        lines.append(f"  text: {_visible(repr(text))}")
    if isinstance(inputs, dict):
        lines.append("  inputs:" if inputs else "  inputs: none")
        for name in sorted(inputs, key=str):
            value = inputs[name]
            shown = value if isinstance(value, str) else repr(value)
            lines.append(f"    {_visible(str(name))} = {_visible(shown)}")
    elif inputs is not None:
        lines.append(f"  inputs: {_visible(repr(inputs))}")
    return lines
