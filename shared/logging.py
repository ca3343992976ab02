"""JSON logs with the service name and the trace of the event or request being handled.

Personal data never belongs in a log line: code logs ids, types and counts, never payloads. As a
second line of defence a filter masks anything shaped like a phone number, an email address or a
national id before a record is written.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
_ce_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ce_id", default=None)

_PII_PATTERNS = (
    re.compile(r"\+?\d(?:[\s-]?\d){8,}"),  # phone numbers, national ids: 9 digits or more
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # email addresses
    re.compile(r"\b\d{17}[\dXx]\b"),  # PRC resident id
)


def mask(text: str) -> str:
    for pattern in _PII_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


def trace_id_of(traceparent: str | None) -> str | None:
    # W3C traceparent: version-traceid-parentid-flags
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    trace_token = _trace.set(trace_id_of(getattr(event, "traceparent", None)))
    id_token = _ce_id.set(getattr(event, "id", None))
    try:
        yield
    finally:
        _trace.reset(trace_token)
        _ce_id.reset(id_token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        if getattr(record, "trace_id", None) is None:
            record.trace_id = _trace.get()
        if getattr(record, "ce_id", None) is None:
            record.ce_id = _ce_id.get()
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def describe_error(exc: BaseException) -> str:
    """An exception's type, with what it says only where that cannot be data: a socket's or the
    broker client's errors (addresses, timeouts), a database error's driver type and SQLSTATE.
    A database, HTTP or validation error's message can quote the values involved."""
    name = type(exc).__name__
    if isinstance(exc, OSError | TimeoutError) or type(exc).__module__.startswith("aiokafka"):
        return mask(f"{name}: {exc}")
    orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper around the driver's error
    code = getattr(orig if orig is not None else exc, "sqlstate", None) or getattr(
        orig, "pgcode", None
    )
    if orig is not None:
        name = f"database error {type(orig).__name__}"
    return f"{name} (SQLSTATE {code})" if isinstance(code, str) else name


def safe_traceback(exc_info: ExcInfo) -> str:
    """Where an error happened, without what it said: the message of a database, HTTP or
    validation error can quote the values involved (a key, a name, a phone number), so each
    exception in the chain keeps its type and only what ``describe_error`` knows to be safe; the
    frames are code, not data."""
    _, exc, _ = exc_info
    lines: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = "".join(traceback.format_tb(exc.__traceback__))
        lines.insert(0, f"Traceback (most recent call last):\n{frames}{describe_error(exc)}")
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return mask("\n\nwhich then caused:\n".join(lines))


class _SafeJsonFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str:
        return safe_traceback(ei)


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _SafeJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s %(ce_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka reports every coordinator hiccup (a group coordinator still loading, a rebalance)
    # at WARNING or ERROR, and retries by itself; what it cannot retry reaches our code as an
    # exception, which the consumer runner logs.
    logging.getLogger("aiokafka").setLevel("ERROR")
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel("CRITICAL")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
