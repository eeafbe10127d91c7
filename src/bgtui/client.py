"""The controller's HTTP API as the client sees it: every call signed, every refusal one line.

`ControllerClient` speaks to `bgctl serve` over its Unix socket (`unix:PATH`) or TCP
(`http(s)://HOST:PORT`, TLS checked against a given CA). Each call carries an RFC 9421 signature
by the caller's identity over the exact bytes sent; the controller's `{"error": …}` answers come
back as `ApiRefused` (with the HTTP status), a controller that does not answer as `Unreachable`
(so callers can fall back to the local mirror); both are `Refused`. Nothing here trusts what the
controller says about a signed object: callers that act on a request (approvers) check its
signature themselves (`verified_request`), the audit mirror checks the chain and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.httpsig import sign_request
from bgtui.protocol.objects import Request, Signed

if TYPE_CHECKING:
    import ssl

    import httpx

CONTROLLER_ENV = "BGTUI_CONTROLLER"
CA_CERT_ENV = "BGTUI_CA_CERT"
FINAL_STATES = ("ended", "rejected", "cancelled", "expired", "failed")
AUDIT_PAGE = 5000  # the most entries or checkpoints the controller sends in one answer
ASCIICAST = "application/x-asciicast"
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_UDS_BASE = "http://bgctl"

View = dict[str, Any]
Items = list[Any]  # the name `list` is taken inside ControllerClient


class Unreachable(Refused):
    """The controller did not answer: not running, wrong address, or too slow."""


class ApiRefused(Refused):
    """The controller answered with an error; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def request_id(text: str) -> str:
    """The request id in an id or an approval link (`…/requests/ID/approve`), checked as a ULID.

    Links look like `https://portal.example/acme/requests/ID/approve` or
    `bgtui://CONTROLLER/requests/ID/approve` (what the controller's notifications carry).
    """
    value = text.strip()
    if "/" in value:
        parts = [p for p in value.split("?")[0].split("#")[0].split("/") if p]
        if len(parts) >= 3 and parts[-1] == "approve" and parts[-3] == "requests":
            value = parts[-2]
        else:
            raise Refused(
                f"{text!r} is neither a request id nor an approval link (…/requests/ID/approve)"
            )
    candidate = value.upper()
    if not _ULID.fullmatch(candidate):
        raise Refused(f"{value!r} is not a request id (a 26-character ULID, as `bgtui list` shows)")
    return candidate


def link_controller(text: str) -> str | None:
    """The controller id a `bgtui://CONTROLLER/requests/ID/approve` link names, else None."""
    parts = urlsplit(text.strip())
    return parts.netloc or None if parts.scheme == "bgtui" else None


def verified_request(view: View) -> tuple[Signed, Request]:
    """The operator-signed request inside a view, after checking its signature and signer.

    Everything an approver is shown comes from this signed payload, never from the view's
    unsigned fields, since the transport in between is not trusted.
    """
    try:
        signed = Signed.from_json(view.get("request"))
        key = sshsig.verify(signed.signature, signed.payload, Request.NAMESPACE)
        req: Request = signed.decode(Request)
    except Refused as exc:
        raise Refused(
            f"request {view.get('id')!r} does not carry a valid signature: {exc}"
        ) from None
    if key.fingerprint != req.operator_fingerprint:
        raise Refused(
            f"request {req.id} is signed by {key.fingerprint}, "
            f"not by the operator it names ({req.operator_fingerprint})"
        )
    if view.get("id") != req.id:
        raise Refused(
            f"the controller answered for {view.get('id')!r} with signed request {req.id}"
        )
    return signed, req


def checkpoint_of(item: Any) -> tuple[int, Signed]:
    """(size, signed) from a `{size, head, checkpoint}` item; the signed payload is what counts."""
    if not isinstance(item, dict) or not isinstance(item.get("size"), int):
        raise Refused("the controller sent a malformed checkpoint")
    return item["size"], Signed.from_json(item.get("checkpoint"))


def _tls_verify(ca_cert: Path | None) -> ssl.SSLContext | bool:
    if ca_cert is None:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise Refused(f"{ca_cert}: cannot load the CA certificate ({exc})") from None


class ControllerClient:
    """Signed calls to one controller (`unix:PATH`, `https://HOST:PORT` or `http://HOST:PORT`)."""

    def __init__(
        self,
        url: str,
        signer: sshsig.Signer,
        *,
        ca_cert: Path | None = None,
        timeout: float = 30,
    ) -> None:
        import httpx  # deferred: a fifth of a second to import, and only a call needs it

        self.url = url
        self.signer = signer
        self.timeout = timeout
        if ca_cert is None and os.environ.get(CA_CERT_ENV):
            ca_cert = Path(os.environ[CA_CERT_ENV])
        if url.startswith("unix:"):
            path = url.removeprefix("unix:")
            if not path:
                raise Refused(f"bad controller {url!r}: write unix:PATH")
            transport = httpx.HTTPTransport(uds=path)
            self._http = httpx.Client(transport=transport, base_url=_UDS_BASE, timeout=timeout)
        elif url.startswith(("https://", "http://")):
            parts = urlsplit(url)
            if not parts.hostname or parts.path not in ("", "/") or parts.query:
                raise Refused(f"bad controller {url!r}: write https://HOST:PORT")
            self._http = httpx.Client(
                base_url=url.rstrip("/"), verify=_tls_verify(ca_cert), timeout=timeout
            )
        else:
            raise Refused(
                f"bad controller {url!r}: use unix:PATH, https://HOST:PORT or http://HOST:PORT"
            )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport --------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        content: bytes = b"",
        content_type: str | None = None,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        import httpx

        request = self._http.build_request(method, path, content=content)
        if content_type is not None:
            request.headers["Content-Type"] = content_type
        # Sign what goes on the wire: the URL httpx built and the exact body bytes.
        query = request.url.query.decode()
        request.headers.update(sign_request(self.signer, method, request.url.path, query, content))
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            finally:
                response.close()
            raise self._refusal(response)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(
                f"the controller at {self.url} did not answer within {self.timeout:g}s ({exc})"
            )
        said = str(exc) or type(exc).__name__
        return Unreachable(
            f"cannot reach the controller at {self.url}: {said}; is `bgctl serve` running?"
        )

    @staticmethod
    def _refusal(response: httpx.Response) -> ApiRefused:
        try:
            message = response.json().get("error")
        except (ValueError, AttributeError):
            message = None
        if not isinstance(message, str) or not message:
            message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if response.status_code >= 500:
            return ApiRefused(response.status_code, f"controller error: {message}")
        return ApiRefused(response.status_code, " ".join(message.split()))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer to a call with an optional JSON `body`."""
        if body is None:
            return self._json(self._send(method, path))
        content = json.dumps(body, separators=(",", ":")).encode()
        return self._json(self._send(method, path, content, "application/json"))

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise Refused(
                f"the controller at {self.url} answered with something not JSON"
            ) from None

    # API --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The controller's id, public key and policy (`/v1/info`)."""
        result: dict[str, Any] = self._call("GET", "/v1/info")
        return result

    def resources(self) -> list[dict[str, Any]]:
        """The resource catalog."""
        result: list[dict[str, Any]] = self._call("GET", "/v1/resources")
        return result

    def submit(self, signed: Signed) -> View:
        """Submits a request signed by the operator; returns its view."""
        result: View = self._call("POST", "/v1/requests", signed.to_json())
        return result

    def list(self) -> list[View]:
        """Every request the caller may see (an operator: their own)."""
        result: list[View] = self._call("GET", "/v1/requests")
        return result

    def get(self, rid: str) -> View:
        """One request and its session."""
        result: View = self._call("GET", f"/v1/requests/{request_id(rid)}")
        return result

    def decide(self, rid: str, signed: Signed) -> View:
        """Posts a signed approval or rejection."""
        path = f"/v1/requests/{request_id(rid)}/approvals"
        result: View = self._call("POST", path, signed.to_json())
        return result

    def withdraw(self, rid: str) -> View:
        """Withdraws a pending request (its operator)."""
        return self._action(rid, "withdraw")

    def end(self, rid: str) -> View:
        """Ends an active session (its operator)."""
        return self._action(rid, "end")

    def revoke(self, rid: str) -> View:
        """Revokes an active session (an approver)."""
        return self._action(rid, "revoke")

    def _action(self, rid: str, name: str) -> View:
        result: View = self._call("POST", f"/v1/requests/{request_id(rid)}/{name}")
        return result

    def credentials(self, rid: str) -> dict[str, Any]:
        """The session's credential, sealed to the operator's key (`sealed` None: out of band)."""
        result: dict[str, Any] = self._call("GET", f"/v1/requests/{request_id(rid)}/credentials")
        return result

    def events(self, on_open: Callable[[], object] | None = None) -> Iterator[dict[str, Any]]:
        """Parsed events from the live stream (`/v1/events`) until the controller ends it.

        `on_open` runs once the controller has subscribed us, before any event: what it reads
        then cannot miss a change, since every later one comes down the stream.
        """
        for event in self._stream():
            if event is None:
                if on_open is not None:
                    on_open()
            else:
                yield event

    def _stream(self) -> Iterator[dict[str, Any] | None]:
        """The event stream, led by one None once the controller has subscribed us."""
        import httpx

        response = self._send("GET", "/v1/events", stream=True)
        try:
            yield None
            yield from _parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        finally:
            response.close()

    def watch(self, rid: str) -> Iterator[View]:
        """The request's view once the stream is open, then again on each change to it.

        Reading the request only after the controller has subscribed us means no change can
        fall between the read and the stream. Ends when the controller ends the stream.
        """
        rid = request_id(rid)
        for event in self._stream():
            if event is None:
                yield self.get(rid)
                continue
            view = event.get("request")
            if event.get("type") == "request" and isinstance(view, dict) and view.get("id") == rid:
                yield view

    def follow(self, rid: str, *, reconnects: int = 3) -> Iterator[View]:
        """Like `watch`, reconnecting when the controller cuts the stream (a slow reader)."""
        for _ in range(reconnects + 1):
            yield from self.watch(rid)
        raise Refused(f"the controller at {self.url} keeps closing the event stream")

    # audit log and recordings (DESIGN §6) -------------------------------------------------
    def audit_entries(self, after: int, limit: int = AUDIT_PAGE, session: str | None = None) -> Any:
        """`{"entries": [{seq, entry, prev_hash, hash}…], "size": N}` after seq `after`."""
        query: dict[str, Any] = {"after": after, "limit": min(limit, AUDIT_PAGE)}
        if session is not None:
            query["session"] = request_id(session)
        return self._call("GET", f"/v1/audit?{urlencode(query)}")

    def audit_checkpoints(self, after_size: int, limit: int = AUDIT_PAGE) -> Items:
        """Signed checkpoints covering more than `after_size` entries, smallest first."""
        query = urlencode({"after_size": after_size, "limit": min(limit, AUDIT_PAGE)})
        result = self._call("GET", f"/v1/audit/checkpoints?{query}")
        if not isinstance(result, list):
            raise Refused("the controller sent a malformed checkpoint list")
        return result

    def audit_head(self) -> Any:
        """The newest signed checkpoint, `{size, head, checkpoint}`."""
        return self._call("GET", "/v1/audit/head")

    def upload_recording(self, rid: str, data: bytes) -> dict[str, Any]:
        """Uploads an asciicast v2 recording of the caller's session: {sha256, bytes, at}."""
        path = f"/v1/requests/{request_id(rid)}/recordings"
        result: dict[str, Any] = self._json(self._send("POST", path, data, ASCIICAST))
        return result

    def recordings(self, rid: str) -> Items:
        """The session's recordings as the audit log lists them: [{sha256, bytes, at}]."""
        result: Items = self._call("GET", f"/v1/requests/{request_id(rid)}/recordings")
        return result

    def recording(self, sha256: str) -> bytes:
        """A recording's exact bytes, checked against `sha256` before they are returned."""
        data = self._send("GET", f"/v1/recordings/{sha256}").content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Refused(f"the controller sent recording {sha256[:12]}… with other bytes")
        return data


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events (`event:` / `data:` lines, blank line ends one) as parsed JSON."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                data = []
                try:
                    event = json.loads(text)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
