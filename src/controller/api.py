"""The controller's HTTP API: a thin Starlette shell around `lifecycle.Controller`.

Every route but /v1/info and /openapi.json is authenticated with an RFC 9421 signature by a
pinned key; authorisation (who may do what) is the lifecycle's business. Bodies are capped,
errors are JSON objects with one `error` line, and every refusal is audited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bgtui.protocol.errors import Refused
from bgtui.protocol.httpsig import AuthError, Caller, ReplayCache, verify_request
from controller.lifecycle import Controller, Denied
from controller.openapi import OPENAPI
from controller.recordings import MAX_PAGE, MAX_RECORDING

log = logging.getLogger("bgctl.api")
MAX_BODY = 64 * 1024
KEEPALIVE = 15.0

Handler = Callable[[Request, Caller, bytes], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Denied(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Denied(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyNotJson(Denied):
    """A body that does not parse; refused and audited like any other bad input."""


def _int_query(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    """A non-negative integer query parameter, capped at `maximum`."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or len(text) > 18:
        raise Denied(400, f"?{name}= must be a non-negative integer")
    value = int(text)
    if maximum is not None and value > maximum:
        raise Denied(400, f"?{name}= may be at most {maximum}")
    return value


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BodyNotJson(400, "body is not JSON") from None


def build_app(controller: Controller) -> Starlette:
    """The ASGI app; its lifespan starts the controller (reconcile, clock) and stops it."""
    replay = ReplayCache()

    def authenticated(
        handler: Handler, max_body: int = MAX_BODY
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _read_body(request, max_body)
                caller = verify_request(
                    request.headers,
                    request.method,
                    request.url.path,
                    request.url.query,
                    body,
                    lookup=controller.lookup,
                    replay=replay,
                )
            except AuthError as exc:
                controller.refuse(
                    exc.status,
                    "api.unauthenticated",
                    None,
                    f"{request.method} {request.url.path}: {exc}",
                )
                return _error(exc.status, str(exc))
            except Denied as exc:
                controller.refuse(
                    exc.status, "api.refused", None, f"{request.method} {request.url.path}: {exc}"
                )
                return _error(exc.status, str(exc))
            try:
                return await handler(request, caller, body)
            except BodyNotJson as exc:
                where = f"{request.method} {request.url.path}"
                controller.refuse(exc.status, "api.refused", caller, f"{where}: {exc}")
                return _error(exc.status, str(exc))
            except Denied as exc:
                return _error(exc.status, str(exc))
            except Refused as exc:
                return _error(422, str(exc))
            except Exception:  # a bug: log it whole, tell the caller one line
                log.exception("%s %s failed", request.method, request.url.path)
                return _error(500, "internal error in the controller; its log has the details")

        return endpoint

    async def info(request: Request) -> Response:
        return JSONResponse(controller.info())

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def resources(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.resources())

    async def list_requests(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.requests(caller))

    async def submit(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.submit(_json_body(body), caller), status_code=201)

    async def get_request(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.get(request.path_params["rid"], caller))

    async def decide(request: Request, caller: Caller, body: bytes) -> Response:
        rid = request.path_params["rid"]
        return JSONResponse(controller.decide(rid, _json_body(body), caller))

    def action(name: str) -> Handler:
        async def run(request: Request, caller: Caller, body: bytes) -> Response:
            method = getattr(controller, name)
            return JSONResponse(method(request.path_params["rid"], caller))

        return run

    async def credentials(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.credentials(request.path_params["rid"], caller))

    async def events(request: Request, caller: Caller, body: bytes) -> Response:
        sub = controller.events.subscribe(controller.visible_to(caller))

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    batch = await sub.next_batch(KEEPALIVE)
                    if batch is None:
                        return
                    if not batch:
                        yield b": keepalive\n\n"
                    for event in batch:
                        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            finally:
                controller.events.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def audit_entries(request: Request, caller: Caller, body: bytes) -> Response:
        after = _int_query(request, "after", 0)
        limit = _int_query(request, "limit", 1000, MAX_PAGE)
        session = request.query_params.get("session") or None
        return JSONResponse(controller.audit_page(caller, after, limit, session))

    async def audit_checkpoints(request: Request, caller: Caller, body: bytes) -> Response:
        after = _int_query(request, "after_size", 0)
        limit = _int_query(request, "limit", 1000, MAX_PAGE)
        return JSONResponse(controller.audit_checkpoints(after, limit))

    async def audit_head(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.audit_head())

    async def upload_recording(request: Request, caller: Caller, body: bytes) -> Response:
        rid = request.path_params["rid"]
        return JSONResponse(controller.upload_recording(rid, caller, body), status_code=201)

    async def list_recordings(request: Request, caller: Caller, body: bytes) -> Response:
        return JSONResponse(controller.recordings(request.path_params["rid"], caller))

    async def get_recording(request: Request, caller: Caller, body: bytes) -> Response:
        data = controller.recording(request.path_params["sha256"], caller)
        return Response(data, media_type="application/x-asciicast")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await controller.start()
        try:
            yield
        finally:
            await controller.stop()

    routes = [
        Route("/v1/info", info),
        Route("/openapi.json", openapi),
        Route("/v1/resources", authenticated(resources)),
        Route("/v1/requests", authenticated(list_requests), methods=["GET"]),
        Route("/v1/requests", authenticated(submit), methods=["POST"]),
        Route("/v1/requests/{rid}", authenticated(get_request)),
        Route("/v1/requests/{rid}/approvals", authenticated(decide), methods=["POST"]),
        Route("/v1/requests/{rid}/withdraw", authenticated(action("withdraw")), methods=["POST"]),
        Route("/v1/requests/{rid}/end", authenticated(action("end")), methods=["POST"]),
        Route("/v1/requests/{rid}/revoke", authenticated(action("revoke")), methods=["POST"]),
        Route("/v1/requests/{rid}/credentials", authenticated(credentials)),
        Route("/v1/events", authenticated(events)),
        Route("/v1/audit", authenticated(audit_entries)),
        Route("/v1/audit/checkpoints", authenticated(audit_checkpoints)),
        Route("/v1/audit/head", authenticated(audit_head)),
        Route(
            "/v1/requests/{rid}/recordings",
            authenticated(upload_recording, MAX_RECORDING),
            methods=["POST"],
        ),
        Route("/v1/requests/{rid}/recordings", authenticated(list_recordings), methods=["GET"]),
        Route("/v1/recordings/{sha256}", authenticated(get_recording)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
