"""Errors over HTTP in OpenAI's shape, with the gateway's gRPC reason inside.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "voice",
               "code": "UNKNOWN_SPEAKER", "grpc_status": "INVALID_ARGUMENT"}}

`code` is the gateway's ErrorInfo reason (AIP-193; docs/errors.md lists them), so a client can act
on it exactly as a gRPC client would; the HTTP status follows Google's mapping of gRPC codes
(google/rpc/code.proto). `param` is the request field at fault, named as this HTTP API names it.
Errors found here, before the gateway is called (a body that is not JSON, an unsupported option),
use the same shape with a reason of our own.
"""

from __future__ import annotations

import grpc
from starlette.responses import JSONResponse

from shared.errors import DOMAIN, error_details, lost_status

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

# The gateway's field paths -> this API's parameters (the first matching prefix wins).
PARAMS = (
    ("config.voice", "voice"),
    ("config.instruct", "instructions"),
    ("config.output_format.sample_rate_hz", "sample_rate"),
    ("config.output_format", "response_format"),
    ("config.language", "language"),
    ("config.model", "model"),
    ("config.max_audio_seconds", "max_audio_seconds"),
    ("config.seed", "seed"),
    ("config", "config"),
    ("input.text", "input"),
    ("text", "input"),
    ("reference_audio", "audio_sample"),
    ("consent_statement", "consent"),
    ("preview_text", "script_hint"),
    ("description", "prompt"),
    ("voice.name", "name"),
)


class ApiError(Exception):
    """An error to answer with: HTTP status, a message for a person, an UPPER_SNAKE reason."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None, grpc_status: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.grpc_status = status, message, code, param, grpc_status

    def body(self) -> dict:
        error = {
            "message": self.message,
            "type": ERROR_TYPES.get(self.status, "server_error"),
            "param": self.param,
            "code": self.code,
        }
        if self.grpc_status:
            error["grpc_status"] = self.grpc_status
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def invalid(problems: list[dict], code: str = "INVALID_REQUEST") -> ApiError:
    """Pydantic's problems (`ValidationError.errors()`) as one 400 naming each field."""
    fields = [".".join(str(part) for part in p["loc"] if part not in ("body", "query", "path")) for p in problems]
    message = "; ".join(f"{field or 'body'}: {p['msg']}" for field, p in zip(fields, problems))
    return ApiError(400, message, code, next((field for field in fields if field), None))


def http_param(field: str) -> str:
    for prefix, param in PARAMS:
        if field == prefix or field.startswith(prefix + "."):
            return param
    return field


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """A failed gateway call as the HTTP error to answer with."""
    code, info, bad_request = error_details(error)
    status = HTTP_STATUS.get(code, 500)
    if info is None or info.domain != DOMAIN:
        # Not the gateway's own status: it is down or unreachable, or the call never got there.
        if lost_status(error):  # our write met the stream's end and the gateway's status was lost
            code, status = grpc.StatusCode.UNAVAILABLE, HTTP_STATUS[grpc.StatusCode.UNAVAILABLE]
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            reason = {grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED"}.get(code, "GATEWAY_UNAVAILABLE")
            return ApiError(
                status, f"the speech service did not answer ({code.name}); retry later", reason, grpc_status=code.name
            )
        return ApiError(status, error.details() or code.name, code.name, grpc_status=code.name)
    param = bad_request.field_violations[0].field if bad_request and bad_request.field_violations else None
    param = param or info.metadata.get("field")
    return ApiError(
        status, error.details() or code.name, info.reason, http_param(param) if param else None, grpc_status=code.name
    )
