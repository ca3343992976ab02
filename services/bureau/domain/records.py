"""One account's record as written to the file: a Metro 2 base segment for the US, a JSON
Lines record for CN; and the checks that what this service knows agrees with itself and with
the ledger. Pure: a row of facts in, a line or a verdict out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from services.bureau.domain import metro2
from services.bureau.domain.figures import Figures, Statement
from services.bureau.domain.reporting import five_level, us_address

Row = Mapping[str, Any]  # an account's facts as the cycle reads them


def statement(row: Row) -> Statement:
    return Statement(
        principal=row["principal"],
        opened_on=row["opened_on"],
        dues=tuple(row["schedule_dues"] or ()),
        amounts=tuple(row["schedule_amounts"] or ()),
        balance=row["balance"],
        overdue=row["overdue"],
        days_past_due=row["days_past_due"],
        first_delinquency=row["first_delinquency"],
        plan_active=row["plan_active"],
        plan_dues=tuple(row["plan_dues"] or ()),
        plan_amounts=tuple(row["plan_amounts"] or ()),
        closed_rating=row["closed_rating"],
        last_payment_on=row["last_paid_on"],
        last_payment_amount=row["last_paid_amount"],
        paid_in_period=row["paid_in_period"],
        recorded=dict(row["history"] or {}),
    )


def reconciled(row: Row, ledger: Mapping[str, Mapping[str, Any]] | None) -> bool:
    """Consistent in itself (a currency, overdue within the balance, days past due only with
    something overdue) and, when the ledger was asked, equal to it in overdue, balance, bucket,
    currency and whether a plan runs."""
    consistent = bool(
        row["currency"] is not None
        and row["overdue"] >= 0
        and (row["days_past_due"] == 0 or row["overdue"] > 0)
        and row["balance"] is not None
        and row["balance"] >= row["overdue"]
    )
    if ledger is None:
        return consistent
    standing = ledger.get(row["account_id"])
    return (
        consistent
        and standing is not None
        and Decimal(str(standing["overdue"])) == row["overdue"]
        and Decimal(str(standing["balance"])) == row["balance"]
        and standing["bucket"] == row["bucket"]
        and standing["currency"] == row["currency"]
        # a plan that broke at the cycle's own clock move changes no amount, but the record
        # (its instalment, its comment): wait for the news as for a bucket change
        and bool(standing.get("plan_active", row.get("plan_active")))
        == bool(row.get("plan_active"))
    )


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def line(reporter: metro2.Reporter, row: Row, country: str, f: Figures, now: datetime) -> str:
    if country == "US":
        name = (row["full_name"] or "").split()
        address = us_address(row["postal_address"]) or ("", "", "", "")
        record = metro2.Base(
            account_number=row["account_id"],
            date_opened=row["opened_on"] or now.date(),
            highest_credit=f.highest_credit,
            terms_months=f.terms_duration,
            terms_frequency=f.terms_frequency,
            scheduled_payment=f.scheduled_payment,
            actual_payment=f.actual_payment,
            status=f.status,
            history=f.history,
            special_comment=f.special_comment,
            compliance_code=f.compliance_code,
            current_balance=f.current_balance,
            amount_past_due=f.amount_past_due,
            information_date=f.information_date,
            first_delinquency=f.first_delinquency,
            last_payment=f.last_payment,
            date_closed=f.date_closed,
            surname=name[-1] if name else "",
            first_name=" ".join(name[:-1]) if len(name) > 1 else "",
            ssn=(row["national_id"] or "").replace("-", ""),
            birth_date=row["birth_date"],
            address_line=address[0],
            city=address[1],
            state=address[2],
            zip_code=address[3],
            payment_rating=f.payment_rating,
        )
        return metro2.base(reporter, record, now)
    code = f.compliance_code
    pre_notice = row["pre_notice_delivered_at"]
    return json.dumps(
        {
            "record_version": "arrears-cn-2",
            "reporter": reporter.identification,
            "account_id": row["account_id"],
            "name": row["full_name"],
            "id_type": "10",  # 居民身份证
            "id_number": row["national_id"],
            "birth_date": str(row["birth_date"]),
            "currency": row["currency"],
            "opened_on": _day(row["opened_on"]),
            "original_amount": str(f.highest_credit),
            "installments": f.terms_duration,
            "installment_frequency": f.terms_frequency,
            "installment_amount": str(f.scheduled_payment),
            "balance": str(f.current_balance),
            "overdue_amount": str(f.amount_past_due),
            "overdue_days": 0 if f.status == "13" else row["days_past_due"],
            "paid_in_period": str(f.actual_payment),
            "last_payment_date": _day(f.last_payment),
            "last_payment_amount": (
                str(f.last_payment_amount) if f.last_payment_amount is not None else None
            ),
            "status": f.status,
            "five_level_class": five_level(0 if f.status == "13" else row["days_past_due"]),
            "first_delinquency_date": _day(f.first_delinquency),
            "closed_on": _day(f.date_closed),
            "information_date": _day(f.information_date),
            "pre_notice_date": _day(pre_notice.astimezone(UTC).date() if pre_notice else None),
            "disputed": code == "XB",
            "dispute_note": {
                "XB": "争议处理中",
                "XH": "争议已处理",
                "XC": "争议已处理，客户仍有异议",
            }.get(code),
            "plan": f.special_comment in ("AC", "CP"),
            # a plan agreed under hardship (the CN record's counterpart of Metro 2's CP / AC)
            "hardship_plan": bool(row.get("plan_hardship")) and f.special_comment in ("AC", "CP"),
            "reported_at": now.isoformat(),
        },
        ensure_ascii=False,
        sort_keys=True,
    )
