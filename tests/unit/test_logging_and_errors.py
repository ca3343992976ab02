from __future__ import annotations

import io
import json
import logging

from sqlalchemy.exc import IntegrityError

from shared import logging as arrears_logging
from shared.consumer import PermanentError, safe_reason
from shared.outbox import LANES, lane_of


def capture(service: str = "ledger") -> io.StringIO:
    arrears_logging.configure(service)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.stream = stream  # type: ignore[attr-defined]
    return stream


def test_log_lines_are_json_with_service_and_trace() -> None:
    stream = capture()

    class Event:
        id = "ce-1"
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    with arrears_logging.event_context(Event()):
        logging.getLogger("t").info("applied %d records", 3)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "applied 3 records"
    assert line["service"] == "ledger"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["ce_id"] == "ce-1"


def test_phone_numbers_emails_and_national_ids_are_masked_in_logs() -> None:
    stream = capture()
    logging.getLogger("t").warning(
        "contact %s %s %s", "+8613800138000", "li.wei@example.cn", "11010519491231002X"
    )
    text = stream.getvalue()
    for secret in ("13800138000", "li.wei@example.cn", "11010519491231002X"):
        assert secret not in text
    assert "[redacted]" in text


def test_a_logged_traceback_names_the_error_and_where_but_not_what_it_said() -> None:
    stream = capture()
    customer = {"name": "Li Wei", "national_id": "110105194912310021"}

    def lookup() -> None:
        try:
            raise KeyError(customer["name"])
        except KeyError as exc:
            raise ValueError(f"Key (national_id)=({customer['national_id']})") from exc

    try:
        lookup()
    except ValueError:
        logging.getLogger("t").exception("cycle failed")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "cycle failed"
    trace = line["exc_info"]
    assert "Li Wei" not in trace
    assert "110105194912310021" not in trace
    assert "ValueError" in trace
    assert "KeyError" in trace
    assert "in lookup" in trace
    assert trace.index("KeyError") < trace.index("ValueError")  # cause first, as Python prints


def test_a_logged_database_error_keeps_its_sqlstate_not_its_detail() -> None:
    class Orig(Exception):
        sqlstate = "23505"

    stream = capture()
    detail = "Key (customer_id)=(C0000042) already exists"
    try:
        raise IntegrityError("INSERT ...", {}, Orig(detail))
    except IntegrityError:
        logging.getLogger("t").exception("cycle failed")
    trace = json.loads(stream.getvalue().strip().splitlines()[-1])["exc_info"]
    assert "database error Orig (SQLSTATE 23505)" in trace
    assert "C0000042" not in trace


def test_a_logged_connection_error_keeps_its_message() -> None:
    stream = capture()
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9092)")
    except OSError:
        logging.getLogger("t").exception("relay cycle failed")
    trace = json.loads(stream.getvalue().strip().splitlines()[-1])["exc_info"]
    assert "Connect call failed ('127.0.0.1', 9092)" in trace


def test_dates_and_small_numbers_are_not_masked() -> None:
    assert arrears_logging.mask("due 2026-12-01, 3 retries") == "due 2026-12-01, 3 retries"


def test_database_errors_are_reported_without_their_bound_parameters() -> None:
    class Orig(Exception):
        sqlstate = "23505"

    exc = IntegrityError("INSERT ...", {"phone": "+8613800138000"}, Orig("dup"))
    reason = safe_reason(exc)
    assert "13800138000" not in reason
    assert "23505" in reason


def test_handler_verdicts_keep_their_message() -> None:
    assert safe_reason(PermanentError("currency does not match the account")) == (
        "currency does not match the account"
    )
    assert safe_reason(KeyError("secret-value")) == "KeyError"


def test_a_customer_always_lands_on_the_same_outbox_lane() -> None:
    assert lane_of("C-1") == lane_of("C-1")
    assert len({lane_of(f"C-{i}") for i in range(500)}) == LANES


def test_engines_keep_bound_parameters_out_of_error_messages() -> None:
    from shared.db import make_engine

    engine = make_engine("postgresql+asyncpg://u:p@127.0.0.1:1/db")
    assert engine.sync_engine.hide_parameters


class _Gone(Exception):
    sqlstate = "08003"  # connection_does_not_exist: the database restarted under us


class _Duplicate(Exception):
    sqlstate = "23505"


async def test_a_database_that_went_away_answers_503_with_retry_after_not_500() -> None:
    import httpx
    from fastapi import FastAPI
    from sqlalchemy.exc import DBAPIError

    from shared.http import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/gone")
    async def gone() -> None:
        raise DBAPIError("SELECT 1", {}, _Gone())

    @app.get("/refused")
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    @app.get("/duplicate")
    async def duplicate() -> None:
        raise DBAPIError("INSERT", {}, _Duplicate())

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for path in ("/gone", "/refused"):
            answer = await http.get(path)
            assert answer.status_code == 503, path
            assert answer.headers["retry-after"] == "1"
            assert answer.headers["content-type"] == "application/problem+json"
        broken = await http.get("/duplicate")
        assert broken.status_code == 500
        assert "INSERT" not in broken.text  # the statement stays out of the answer
