"""Decoding the hot path's payloads three ways, in one process, on the same records (issue 19):

1. today's path: ``json.loads`` then pydantic's ``model_validate`` (``shared.envelope.decode``);
2. pydantic's fastest path: ``model_validate_json`` on the bytes (parsed in Rust, no dict);
3. msgspec: ``msgspec.json.Decoder`` of ``Struct`` types with the same constraints where msgspec
   can state them (lengths, patterns, ranges), plus the checks it cannot (money's scale and
   range, plausible dates, no NUL) run after decoding.

The records are the ledger's ingest mix (``customer.upserted``, ``loan.opened``, three
``payment.posted``) and the scheduler's ``payment.missed``; each way decodes all of them and
the rate is records per second. Also: each way's CPU seconds per record.

    python -m bench.decoding [--records 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from bench.ledger import upstream_events
from bench.report import report
from bench.scheduler import missed
from shared.envelope import decode, encode
from shared.events import MAX_MONEY, REGISTRY

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    pass


class CustomerUpserted(Base, frozen=True):
    customer_id: Id
    full_name: Text
    national_id: Annotated[str, msgspec.Meta(max_length=64)]
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
    birth_date: date | None = None
    phone: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9]\d{6,14}$")] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    postal_address: Text | None = None
    credit_score: Annotated[int, msgspec.Meta(ge=0, le=1000)] | None = None


class ScheduledInstallment(Base, frozen=True):
    installment_no: Annotated[int, msgspec.Meta(ge=1, le=1200)]
    due_date: date
    amount: Decimal


class LoanOpened(Base, frozen=True):
    account_id: Id
    customer_id: Id
    product: Id
    principal: Decimal
    currency: Currency
    opened_on: date
    schedule: Annotated[list[ScheduledInstallment], msgspec.Meta(min_length=1, max_length=1200)]


class PaymentPosted(Base, frozen=True):
    account_id: Id
    payment_id: Id
    amount: Decimal
    currency: Currency
    posted_at: Annotated[datetime, msgspec.Meta(tz=True)]


class Missed(Base, frozen=True):
    account_id: Id
    customer_id: Id
    installment_no: int
    due_date: date
    amount_due: Decimal
    total_overdue: Decimal
    currency: Currency
    days_past_due: int
    bucket: str
    product: Id | None = None


def _money(value: Decimal) -> None:
    if not value.is_finite() or abs(value) >= MAX_MONEY or value.as_tuple().exponent < -4:  # type: ignore[operator]
        raise ValueError("money")


def _date(value: date) -> None:
    if not date(1900, 1, 1) <= value <= date(2199, 12, 31):
        raise ValueError("date")


def _checked(value: Any) -> Any:
    """The checks msgspec cannot state, over every field (as pydantic's validators do)."""
    for name in value.__struct_fields__:
        field = getattr(value, name)
        if isinstance(field, str) and "\x00" in field:
            raise ValueError(name)
        if isinstance(field, Decimal):
            _money(field)
        elif isinstance(field, date) and not isinstance(field, datetime):
            _date(field)
        elif isinstance(field, list):
            for item in field:
                _checked(item)
    return value


STRUCTS: dict[str, type[Any]] = {
    "customer.upserted": CustomerUpserted,
    "loan.opened": LoanOpened,
    "payment.posted": PaymentPosted,
    "payment.missed": Missed,
}
DECODERS = {name: msgspec.json.Decoder(struct) for name, struct in STRUCTS.items()}


def records(n: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    out = [encode(e) for e in upstream_events(n * 4 // 5)]
    return out + [missed(i) for i in range(n - len(out))]


def timed(way: Callable[[str, bytes], Any], batch: list[tuple[str, bytes]]) -> dict[str, float]:
    way(*batch[0])  # warm
    started, cpu = time.perf_counter(), time.process_time()
    for ce_type, value in batch:
        way(ce_type, value)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "per_s": round(len(batch) / wall),
        "cpu_us_per_record": round(cpu * 1e6 / len(batch), 2),
    }


def main(n: int) -> dict[str, Any]:
    recs = records(n)
    batch = [(dict(h)["ce_type"].decode(), v) for _, v, h in recs]

    def today(ce_type: str, value: bytes) -> Any:
        raw = json.loads(value)
        return REGISTRY[ce_type].model.model_validate(raw)

    def pydantic_json(ce_type: str, value: bytes) -> Any:
        return REGISTRY[ce_type].model.model_validate_json(value)

    def with_msgspec(ce_type: str, value: bytes) -> Any:
        return _checked(DECODERS[ce_type].decode(value))

    # the three agree on what they read
    for ce_type, value in batch[:50]:
        left = today(ce_type, value).model_dump()
        assert pydantic_json(ce_type, value).model_dump() == left
        decoded = msgspec.to_builtins(with_msgspec(ce_type, value))
        assert decoded["account_id" if "account_id" in decoded else "customer_id"] == left.get(
            "account_id", left.get("customer_id")
        )
    started = time.perf_counter()
    for key, value, headers in recs[:5000]:
        decode(key, value, headers)
    envelope = 5000 / (time.perf_counter() - started)
    return {
        "records": n,
        "envelope_decode_per_s": round(envelope),
        "json_loads_model_validate": timed(today, batch),
        "pydantic_model_validate_json": timed(pydantic_json, batch),
        "msgspec_structs": timed(with_msgspec, batch),
        "bare_json_loads": timed(lambda _t, v: json.loads(v), batch),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    report("decoding", main(args.records))
