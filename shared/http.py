"""HTTP errors as RFC 9457 problem details, naming the field at fault but never echoing input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from shared import metrics

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
    if exc.status_code == 413 and MAX_BODY_SIZE_SCOPE_KEY in request.scope:
        # refused by its Content-Length, or as soon as a chunked body passed the limit
        detail = f"request body over the limit of {request.scope[MAX_BODY_SIZE_SCOPE_KEY]} bytes"
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


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.middleware("http")
    async def refuse_nul(request: Request, call_next: Any) -> Any:
        # No identifier holds a NUL, and PostgreSQL refuses one in text: turn it away here
        # instead of failing in the database.
        if "\x00" in request.url.path or "%00" in request.url.query:
            count_rejected(request)
            return problem(400, "Bad Request", "a NUL character in the path or query")
        return await call_next(request)
