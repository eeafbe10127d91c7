"""What every screen shares: reading views (state, age, time left, what a row notes).

The helpers here are plain functions of the controller's JSON views (DESIGN §9); no Textual,
so they are tested like the command line's `sessionview`. Signing requests and decisions is
in `bgtui.actions`, shared with the command line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bgtui.client import FINAL_STATES, View
from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import format_duration, parse_utc

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
