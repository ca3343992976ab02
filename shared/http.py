"""HTTP errors as RFC 9457 problem details, naming the field at fault but never echoing input."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import metrics
from shared.db import database_unavailable

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    response = problem(exc.status_code, _title(exc.status_code), detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(request, exc.errors())


def validation_problem(
    request: Request,
    errors: Sequence[Any],
    prefix: Sequence[str] = (),
    what: str = "invalid field(s)",
) -> JSONResponse:
    """A 422 naming each field at fault (``errors`` as pydantic gives them); inputs are never
    echoed, since they may be personal data."""
    listed = [
        {
            "field": ".".join(str(p) for p in (*prefix, *err.get("loc", ()))),
            "message": err.get("msg", ""),
        }
        for err in errors
    ]
    count_rejected(request)
    fields = ", ".join(e["field"] for e in listed[:5])
    return problem(422, "Unprocessable Content", f"{what}: {fields}", errors=listed)


def count_rejected(request: Request) -> None:
    route = request.scope.get("route")
    metrics.HTTP_REJECTED.labels(getattr(route, "path", "unmatched")).inc()


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database restarting answers 503 with Retry-After, as a proxy would, so that clients
    retry; any other database error stays a 500 (and is logged as one)."""
    if database_unavailable(exc):
        response = problem(503, "Service Unavailable", "the database is unreachable; try again")
        response.headers["Retry-After"] = "1"
        return response
    log.error("database error in %s", request.url.path, exc_info=exc)
    return problem(500, "Internal Server Error")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(ConnectionError, _database_error)

    app.add_middleware(RefuseNul)


class RefuseNul:
    """No identifier holds a NUL, and PostgreSQL refuses one in text: turn it away here instead
    of failing in the database. (Pure ASGI, like every middleware here: Starlette's
    BaseHTTPMiddleware would wrap a body-limit refusal raised while reading into an error.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            request = Request(scope, receive)
            count_rejected(request)
            response = problem(400, "Bad Request", "a NUL character in the path or query")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413 problem+json before reading it: at
    once by its declared Content-Length, or, for a chunked body, as soon as what has arrived
    passes the limit (the rest is never read; the handler's read fails with the 413).
    FastAPI's own ``max_body_size`` answers the first case in plain text."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = problem(413, "Content Too Large", BodyTooLarge(self.max_bytes).detail)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class Window:
    """At most ``limit`` requests per key in any ``seconds`` (wall time: operational), in this
    process."""

    def __init__(self, limit: int, seconds: float) -> None:
        self._limit, self._seconds = limit, seconds
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._seconds:
            hits.popleft()
        if len(hits) >= self._limit:
            return False
        hits.append(now)
        if len(self._hits) > 100_000:  # forget idle keys rather than grow without bound
            self._hits = {k: v for k, v in self._hits.items() if v}
        return True


async def read_form(request: Request, max_bytes: int, max_fields: int) -> dict[str, str] | None:
    """A browser's urlencoded form, first value of each field; None when the body is over
    ``max_bytes`` (refused by its declared length before it is read, else as soon as it
    passes the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    parsed = parse_qs(b"".join(chunks).decode("utf-8", "replace"), max_num_fields=max_fields)
    return {k: v[0] for k, v in parsed.items() if v}
