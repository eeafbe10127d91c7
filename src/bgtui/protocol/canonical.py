"""RFC 8785 canonical JSON: one byte string per value, so signatures cover meaning, not layout."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from bgtui.protocol.errors import Refused

MAX_OBJECT = 64 * 1024


def canonical(value: Any) -> bytes:
    """The RFC 8785 encoding of `value` (our objects hold str, int, bool, None, list, dict)."""
    return bytes(rfc8785.dumps(value))


def parse_canonical(data: bytes | str, what: str = "object") -> dict[str, Any]:
    """Parses a JSON object and refuses it unless the bytes are already canonical.

    Holding signed payloads to one encoding means any changed byte changes the signed bytes.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_OBJECT:
        raise Refused(f"malformed {what}: larger than {MAX_OBJECT} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused(f"malformed {what}: not JSON") from None
    if not isinstance(value, dict):
        raise Refused(f"malformed {what}: not a JSON object")
    try:
        again = canonical(value)
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        raise Refused(f"malformed {what}: not canonical JSON") from None
    if again != raw:
        raise Refused(f"malformed {what}: not in canonical form (RFC 8785)")
    return value
