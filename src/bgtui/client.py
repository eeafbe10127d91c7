"""The controller's HTTP API as the client sees it: every call signed, every refusal one line.

`ControllerClient` speaks to `bgctl serve` over its Unix socket (`unix:PATH`) or TCP
(`http(s)://HOST:PORT`, TLS checked against a given CA). Each call carries an RFC 9421 signature
by the caller's identity over the exact bytes sent; the controller's `{"error": …}` answers come
back as `Refused`. Nothing here trusts what the controller says about a signed object: callers
that act on a request (approvers) check its signature themselves (`verified_request`).
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bgtui.protocol import sshsig
from bgtui.protocol.errors import Refused
from bgtui.protocol.httpsig import sign_request
from bgtui.protocol.objects import Request, Signed

CONTROLLER_ENV = "BGTUI_CONTROLLER"
CA_CERT_ENV = "BGTUI_CA_CERT"
FINAL_STATES = ("ended", "rejected", "cancelled", "expired", "failed")
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_UDS_BASE = "http://bgctl"

View = dict[str, Any]


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


def _tls_verify(ca_cert: Path | None) -> ssl.SSLContext | bool:
    if ca_cert is None:
        return True
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
    def _build(self, method: str, path: str, body: Any = None) -> httpx.Request:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        request = self._http.build_request(method, path, content=content)
        if content:
            request.headers["Content-Type"] = "application/json"
        # Sign what goes on the wire: the URL httpx built and the exact body bytes.
        query = request.url.query.decode()
        request.headers.update(sign_request(self.signer, method, request.url.path, query, content))
        return request

    def _unreachable(self, exc: httpx.TransportError) -> Refused:
        if isinstance(exc, httpx.TimeoutException):
            return Refused(
                f"the controller at {self.url} did not answer within {self.timeout:g}s ({exc})"
            )
        said = str(exc) or type(exc).__name__
        return Refused(
            f"cannot reach the controller at {self.url}: {said}; is `bgctl serve` running?"
        )

    @staticmethod
    def _refusal(response: httpx.Response) -> Refused:
        try:
            message = response.json().get("error")
        except (ValueError, AttributeError):
            message = None
        if not isinstance(message, str) or not message:
            message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if response.status_code >= 500:
            return Refused(f"controller error: {message}")
        return Refused(" ".join(message.split()))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        request = self._build(method, path, body)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._refusal(response)
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

    def events(self) -> Iterator[dict[str, Any]]:
        """Parsed events from the live stream (`/v1/events`) until the controller ends it."""
        for event in self._stream():
            if event is not None:
                yield event

    def _stream(self) -> Iterator[dict[str, Any] | None]:
        """The event stream, led by one None once the controller has subscribed us."""
        request = self._build("GET", "/v1/events")
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        try:
            if response.status_code >= 400:
                response.read()
                raise self._refusal(response)
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
