"""Per-session SSH keys, derived from the operator's identity key and the request id.

The controller's CA certifies a key made for one session only. Deriving it (HMAC-SHA256 of the
request id under the identity's private seed) means the client never has to store it: the same
identity re-derives it when `bgtui creds --ssh-dir` or `connect` needs the private half, and
nobody without the identity key can.
"""

from __future__ import annotations

import hashlib
import hmac

from bgtui.protocol.keys import PrivateKey

_LABEL = b"bgtui-session-key/v1\0"


def session_key(identity: PrivateKey, request_id: str) -> PrivateKey:
    """The session key pair for `request_id`; its public half goes into the signed request."""
    seed = hmac.new(identity.seed, _LABEL + request_id.encode(), hashlib.sha256).digest()
    return PrivateKey(seed, f"bgtui-session-{request_id}")
