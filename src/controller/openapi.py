"""The controller API's OpenAPI 3.1 description, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_SIGNED = {
    "type": "object",
    "required": ["payload", "signature"],
    "properties": {
        "payload": {"type": "string", "description": "RFC 8785 canonical JSON, the signed bytes"},
        "signature": {"type": "string", "description": "armored SSHSIG (ssh-keygen -Y sign)"},
    },
    "additionalProperties": False,
}
_VIEW = {"$ref": "#/components/schemas/Request"}
_ERROR = {
    "description": "refused; `error` says why in one line",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ERRORS = {
    "401": _ERROR,
    "403": _ERROR,
    "404": _ERROR,
    "409": _ERROR,
    "413": _ERROR,
    "422": _ERROR,
}


def _op(summary: str, ok: Any = _VIEW, body: Any = None, status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"httpSignature": []}],
        "responses": {
            status: {"description": "done", "content": {"application/json": {"schema": ok}}},
            **_ERRORS,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_RID = [{"name": "rid", "in": "path", "required": True, "schema": {"type": "string"}}]


def _query(name: str, description: str, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "description": description, "schema": schema}


_CHECKPOINT = {"$ref": "#/components/schemas/Checkpoint"}
_RECORDING = {"$ref": "#/components/schemas/Recording"}
_AUDIT_PAGE = {
    "type": "object",
    "required": ["entries", "size"],
    "properties": {
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["seq", "entry", "prev_hash", "hash"],
                "properties": {
                    "seq": {"type": "integer"},
                    "entry": {
                        "type": "string",
                        "description": "the entry's canonical JSON, exactly the hashed bytes",
                    },
                    "prev_hash": {"type": "string"},
                    "hash": {
                        "type": "string",
                        "description": 'sha256(prev_hash + "\\n" + entry), hex',
                    },
                },
            },
        },
        "size": {"type": "integer", "description": "entries in the whole log"},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "bgctl",
        "version": "1",
        "description": (
            "The break-glass controller. Every call except /v1/info and /openapi.json carries an "
            "RFC 9421 HTTP Message Signature (Ed25519) over @method, @path, @query and "
            "content-digest, with created, keyid (the key's SHA256 fingerprint), alg=ed25519 and "
            "a nonce; the key must be pinned in the controller's trust store."
        ),
    },
    "paths": {
        "/v1/info": {
            "get": {
                "summary": "Controller id and public key (unauthenticated)",
                "responses": {"200": {"description": "info"}},
            }
        },
        "/v1/resources": {
            "get": _op("The resource catalog", {"type": "array", "items": {"type": "object"}})
        },
        "/v1/requests": {
            "get": _op(
                "Requests the caller may see (operators: their own)",
                {"type": "array", "items": _VIEW},
            ),
            "post": _op(
                "Submit a request signed by the operator (namespace bgtui-request@v1)",
                body=_SIGNED,
                status="201",
            ),
        },
        "/v1/requests/{rid}": {"parameters": _RID, "get": _op("One request and its session")},
        "/v1/requests/{rid}/approvals": {
            "parameters": _RID,
            "post": _op(
                "Approve or reject, signed by an approver (namespace bgtui-approval@v1)",
                body=_SIGNED,
            ),
        },
        "/v1/requests/{rid}/withdraw": {
            "parameters": _RID,
            "post": _op("Withdraw a pending request (its operator)"),
        },
        "/v1/requests/{rid}/end": {
            "parameters": _RID,
            "post": _op("End an active session (its operator)"),
        },
        "/v1/requests/{rid}/revoke": {
            "parameters": _RID,
            "post": _op("Revoke an active session (an approver)"),
        },
        "/v1/requests/{rid}/credentials": {
            "parameters": _RID,
            "get": _op(
                "The session's credential, sealed to the operator's key (NaCl sealed box)",
                {"type": "object", "properties": {"sealed": {"type": ["string", "null"]}}},
            ),
        },
        "/v1/audit": {
            "get": {
                **_op(
                    "Audit entries after seq `after`, in order. Approvers and auditors read the "
                    "whole log; an operator only a session of their own, with ?session=ID "
                    "(403 without it)",
                    _AUDIT_PAGE,
                ),
                "parameters": [
                    _query("after", "only entries with a greater seq (default 0)"),
                    _query("limit", "at most this many entries (default 1000)", 5000),
                    {
                        "name": "session",
                        "in": "query",
                        "description": "only this session's entries",
                        "schema": {"type": "string"},
                    },
                ],
            }
        },
        "/v1/audit/checkpoints": {
            "get": {
                **_op(
                    "Signed checkpoints covering more than `after_size` entries, smallest first",
                    {"type": "array", "items": _CHECKPOINT},
                ),
                "parameters": [
                    _query("after_size", "only checkpoints with a greater size (default 0)"),
                    _query("limit", "at most this many (default 1000)", 5000),
                ],
            }
        },
        "/v1/audit/head": {"get": _op("The newest signed checkpoint", _CHECKPOINT)},
        "/v1/requests/{rid}/recordings": {
            "parameters": _RID,
            "get": _op(
                "The session's recordings, as the audit log records their uploads",
                {"type": "array", "items": _RECORDING},
            ),
            "post": {
                **_op(
                    "Upload an asciicast v2 recording of the session (its operator; while active "
                    "or ending, or up to 10 minutes after it ended; at most 16 MiB). Stored by "
                    "SHA-256 and audited as `recording.uploaded` {sha256, bytes}",
                    _RECORDING,
                    status="201",
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/x-asciicast": {"schema": {"type": "string"}}},
                },
            },
        },
        "/v1/recordings/{sha256}": {
            "parameters": [
                {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": (
                    "A recording's exact bytes (approvers, auditors, the session's operator); "
                    "audited as `recording.downloaded`"
                ),
                "security": [{"httpSignature": []}],
                "responses": {
                    "200": {
                        "description": "the asciicast v2 file",
                        "content": {"application/x-asciicast": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            },
        },
        "/v1/events": {
            "get": {
                "summary": "Server-sent events: `event: request` with the request's view as data",
                "security": [{"httpSignature": []}],
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "httpSignature": {"type": "apiKey", "in": "header", "name": "Signature"}
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Checkpoint": {
                "type": "object",
                "required": ["size", "head", "checkpoint"],
                "properties": {
                    "size": {"type": "integer"},
                    "head": {"type": "string"},
                    "checkpoint": {
                        **_SIGNED,
                        "description": "signed by the controller, namespace bgtui-checkpoint@v1",
                    },
                },
            },
            "Recording": {
                "type": "object",
                "required": ["sha256", "bytes", "at"],
                "properties": {
                    "sha256": {"type": "string"},
                    "bytes": {"type": "integer"},
                    "at": {"type": "string", "description": "when the upload was audited"},
                },
            },
            "Request": {
                "type": "object",
                "required": ["id", "resource", "state"],
                "properties": {
                    "id": {"type": "string"},
                    "resource": {"type": "string"},
                    "privilege": {"type": "string"},
                    "state": {
                        "enum": [
                            "pending",
                            "activating",
                            "active",
                            "ending",
                            "ended",
                            "rejected",
                            "cancelled",
                            "expired",
                            "failed",
                        ]
                    },
                    "expires_at": {"type": ["string", "null"]},
                    "ended_reason": {"type": ["string", "null"]},
                    "approvals_needed": {"type": "integer"},
                    "planes": {"type": "array"},
                    "receipt": {"oneOf": [_SIGNED, {"type": "null"}]},
                    "revision": {
                        "type": "integer",
                        "description": "grows with every view the controller computes; of two"
                        " views of a request, the one with the higher revision is newer",
                    },
                },
            },
        },
    },
}
