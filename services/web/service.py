"""The HTTP front door: the OpenAI-compatible speech API, a WebSocket for streaming text in and
audio out, and the Web UI, on FastAPI and uvicorn (`python -m services.web`).

It is a client of the gateway's public gRPC API like any other (gateway.py) and holds no model and
no state: every request becomes one or two gateway calls with the caller's credential, a deadline
and the trace context, and an HTTP client that disconnects cancels its calls. Errors come back in
OpenAI's shape with the gateway's reason inside (errors.py). The routes are in speech.py and
voices.py; the page is static/ (plain HTML, CSS and JS modules, no build step). OpenAPI docs are
at /docs.

Like the gRPC services: configured by environment variables only (a bad value exits with status 2
naming it), JSON logs with trace ids, one server span per request (OpenTelemetry's ASGI
middleware; probes are not traced) continued into the gateway, and on SIGTERM readiness fails for
GRPC_DRAIN_SECONDS before uvicorn stops, letting requests in flight finish within
GRPC_GRACE_SECONDS. /healthz says the process is up; /readyz that it can reach a serving gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from shared.config import ConfigError, describe, env, load_config
from shared.limits import MAX_REFERENCE_BYTES
from shared.service import ProcessConfig
from shared.telemetry import setup_logging, setup_telemetry

from . import speech, voices
from .errors import ApiError, invalid
from .gateway import Gateway

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PROBES = ("/healthz", "/readyz")
# Request bodies: a voice upload may carry the largest reference clip the gateway takes (plus the
# form around it); anything else is JSON with at most a few pages of text.
MAX_UPLOAD_BYTES = MAX_REFERENCE_BYTES + 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class WebConfig(ProcessConfig):
    host: str = env("WEB_HOST", default="127.0.0.1")
    port: int = env("WEB_PORT", default=8000, min=0, max=65535)
    # The gateway's public API (dns:///gateway:50051 balances over every pod).
    gateway_address: str = env("WEB_GATEWAY_ADDRESS", default="127.0.0.1:50051")
    # The deadline of each gateway call; a client may ask for less with X-Request-Timeout.
    request_timeout_seconds: float = env("WEB_REQUEST_TIMEOUT_SECONDS", default=300.0, min=1)


class BodyLimit:
    """Refuses a request body over its route's limit (413) before reading it, or once it has
    read too much of a body sent without Content-Length."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = MAX_UPLOAD_BYTES if scope["path"].startswith("/v1/audio/voices") else MAX_BODY_BYTES
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await _too_large(limit)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, f"the request body is over {limit} bytes", "REQUEST_TOO_LARGE")
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int):
    return ApiError(
        413,
        f"the request body is over {limit} bytes (reference audio may have at most {MAX_REFERENCE_BYTES} bytes)",
        "REQUEST_TOO_LARGE",
    ).response()


def create_app(config: WebConfig) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.gateway = Gateway(config.gateway_address, config.request_timeout_seconds)
        app.state.draining = False
        try:
            yield
        finally:
            await app.state.gateway.close()

    app = FastAPI(
        title="Qwen3-TTS",
        version="1",
        lifespan=lifespan,
        description="OpenAI-compatible speech, a WebSocket for streaming text in and audio out, and the "
        'caller\'s voice catalogue. Errors: `{"error": {message, type, param, code}}`, '
        "`code` being the gateway's reason (docs/errors.md).",
    )
    app.include_router(speech.router)
    app.include_router(voices.router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = error.errors()
        if any(problem["type"] == "json_invalid" for problem in problems):
            return ApiError(400, "the body is not valid JSON", "INVALID_JSON").response()
        return invalid(problems).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code, "INVALID_REQUEST")
        return ApiError(error.status_code, str(error.detail), code).response()

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request):
        ready = not request.app.state.draining and await request.app.state.gateway.serving()
        return JSONResponse({"status": "ready" if ready else "not ready"}, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class _DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, /readyz fails for `drain_seconds` before uvicorn's graceful stop
    (so load balancers stop sending first); a second one stops at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: float):
        super().__init__(config)
        self.app, self.drain_seconds = app, drain_seconds

    def handle_exit(self, sig, frame) -> None:
        if self.drain_seconds and not self.app.state.draining:
            self.app.state.draining = True
            log.info("draining for %g s: /readyz fails, requests are still served", self.drain_seconds)
            asyncio.get_running_loop().call_later(self.drain_seconds, super().handle_exit, sig, frame)
        else:
            super().handle_exit(sig, frame)


def main() -> None:
    try:
        config = load_config(WebConfig)
    except ConfigError as error:
        print(f"web: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging("web", config.log_level)
    setup_telemetry("web", otlp_endpoint=config.otlp_endpoint or None)
    log.info("web starting: %s", describe(config))
    app = create_app(config)
    traced = OpenTelemetryMiddleware(BodyLimit(app), excluded_urls=",".join(PROBES))
    server = _DrainingServer(
        uvicorn.Config(
            traced,
            host=config.host,
            port=config.port,
            log_config=None,
            lifespan="on",
            ws="websockets",
            timeout_graceful_shutdown=config.grace_seconds,
            server_header=False,
        ),
        app,
        config.drain_seconds,
    )
    server.run()
