"""The controller's audit and recording routes as the client calls them (DESIGN §6).

`AuditApi` wraps a `ControllerClient`: it signs each call the same way (RFC 9421 over the exact
bytes sent) and reuses its connection, but also sends and receives raw bytes (asciicast
recordings) and tells an unreachable controller (`Unreachable`, so callers can fall back to
the local mirror) from one that refused (`ApiRefused`, with the HTTP status).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

import httpx

from bgtui.client import ControllerClient, request_id
from bgtui.protocol.errors import Refused
from bgtui.protocol.httpsig import sign_request
from bgtui.protocol.objects import Signed

MAX_PAGE = 5000
ASCIICAST = "application/x-asciicast"


class Unreachable(Refused):
    """The controller did not answer: not running, wrong address, or too slow."""


class ApiRefused(Refused):
    """The controller answered with an error; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def checkpoint_of(item: Any) -> tuple[int, Signed]:
    """(size, signed) from a `{size, head, checkpoint}` item; the signed payload is what counts."""
    if not isinstance(item, dict) or not isinstance(item.get("size"), int):
        raise Refused("the controller sent a malformed checkpoint")
    return item["size"], Signed.from_json(item.get("checkpoint"))


class AuditApi:
    """Signed calls to `/v1/audit…` and the recording routes of one controller."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    # transport --------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, content: bytes = b"", content_type: str | None = None
    ) -> httpx.Response:
        # The client's connection and error wording are reused on purpose; ControllerClient
        # has no raw-bytes call of its own.
        http = self.client._http
        request = http.build_request(method, path, content=content)
        if content_type is not None:
            request.headers["Content-Type"] = content_type
        query = request.url.query.decode()
        signer = self.client.signer
        request.headers.update(sign_request(signer, method, request.url.path, query, content))
        try:
            response = http.send(request)
        except httpx.TransportError as exc:
            raise Unreachable(str(self.client._unreachable(exc))) from None
        if response.status_code >= 400:
            raise ApiRefused(response.status_code, str(self.client._refusal(response)))
        return response

    def _json(self, method: str, path: str, **send: Any) -> Any:
        response = self._send(method, path, **send)
        try:
            return response.json()
        except ValueError:
            raise Refused(
                f"the controller at {self.client.url} answered with something not JSON"
            ) from None

    # API --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The controller's id and public key (`/v1/info`)."""
        result: dict[str, Any] = self._json("GET", "/v1/info")
        return result

    def entries(self, after: int, limit: int = MAX_PAGE, session: str | None = None) -> Any:
        """`{"entries": [{seq, entry, prev_hash, hash}…], "size": N}` after seq `after`."""
        query: dict[str, Any] = {"after": after, "limit": min(limit, MAX_PAGE)}
        if session is not None:
            query["session"] = request_id(session)
        return self._json("GET", f"/v1/audit?{urlencode(query)}")

    def checkpoints(self, after_size: int, limit: int = MAX_PAGE) -> list[Any]:
        """Signed checkpoints covering more than `after_size` entries, smallest first."""
        query = urlencode({"after_size": after_size, "limit": min(limit, MAX_PAGE)})
        result = self._json("GET", f"/v1/audit/checkpoints?{query}")
        if not isinstance(result, list):
            raise Refused("the controller sent a malformed checkpoint list")
        return result

    def head(self) -> Any:
        """The newest signed checkpoint, `{size, head, checkpoint}`."""
        return self._json("GET", "/v1/audit/head")

    def upload_recording(self, rid: str, data: bytes) -> dict[str, Any]:
        """Uploads an asciicast v2 recording of the caller's session: {sha256, bytes, at}."""
        path = f"/v1/requests/{request_id(rid)}/recordings"
        result: dict[str, Any] = self._json("POST", path, content=data, content_type=ASCIICAST)
        return result

    def recordings(self, rid: str) -> list[dict[str, Any]]:
        """The session's recordings as the audit log lists them: [{sha256, bytes, at}]."""
        result: list[dict[str, Any]] = self._json(
            "GET", f"/v1/requests/{request_id(rid)}/recordings"
        )
        return result

    def recording(self, sha256: str) -> bytes:
        """A recording's exact bytes, checked against `sha256` before they are returned."""
        data = self._send("GET", f"/v1/recordings/{sha256}").content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Refused(f"the controller sent recording {sha256[:12]}… with other bytes")
        return data
