"""The Kubernetes API simulator's errors: `Status` objects worded like the real API server's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from controller.sandbox.kube_resources import Resource

Obj = dict[str, Any]


class ApiError(Exception):
    """A failure answered with a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def response(self) -> JSONResponse:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return JSONResponse(body, status_code=self.code)


def not_found(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found', details)


class Invalid(Exception):
    """A request body the API server would refuse with 422, with the field and why."""

    def __init__(self, kind: str, name: str, field: str, value: Any, why: str) -> None:
        self.kind, self.name, self.field = kind, name, field
        shown = f'"{value}"' if isinstance(value, str) else value
        self.cause = f"Invalid value: {shown}: {why}"
        super().__init__(f'{kind} "{name}" is invalid: {field}: {self.cause}')
