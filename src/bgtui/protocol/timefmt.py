"""Durations (`90s`, `15m`, `1h30m`) and the UTC timestamps inside signed objects."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bgtui.protocol.errors import Refused

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
MAX_DURATION = 366 * 86400


def parse_duration(text: str) -> int:
    """Seconds in a duration such as `90s`, `15m`, `2h`, `1h30m` or `1d`."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise Refused(f"bad duration {text!r}: write it like 90s, 15m, 2h or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise Refused(f"bad duration {text!r}: must be longer than zero")
    if total > MAX_DURATION:
        raise Refused(f"bad duration {text!r}: longer than a year")
    return total


def format_duration(seconds: int) -> str:
    """The shortest duration text that `parse_duration` reads back to `seconds`."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def utc_text(moment: datetime) -> str:
    """RFC 3339 UTC with second precision, as signed objects carry times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str, what: str = "time") -> datetime:
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text):
        raise Refused(f"malformed {what}: expected a UTC time like 2026-01-31T12:00:00Z")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(f"malformed {what}: {text!r} is not a real time") from None


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
