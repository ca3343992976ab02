"""What each field of a bureau record must hold, from the ledger's public API alone.

An oracle for the tests and the campaign's reconciliation, written from the CDIA Credit
Reporting Resource Guide's meanings in ``../shared/domain-notes.md`` and independent of the
bureau's code (it imports nothing from ``services``): given an account's ``GET
/v1/accounts/{id}`` and ``/history`` as they stood at a cycle, the cycle's instant, the one
before it and each month's status at its cycle, ``expected`` says what the record holds, and
``differences`` names every field of a decoded record (Metro 2 as ``tools/metro2check -json``
prints it, or a CN JSON line) that says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

STATUS_OF_RATING = {"0": "11", "1": "71", "2": "78", "3": "80", "4": "82", "5": "83", "6": "84"}
RATING_OF_STATUS = {v: k for k, v in STATUS_OF_RATING.items()}
RATING_OF_BUCKET = {"current": "0", "1-29": "0", "30-59": "1", "60-89": "2", "90-119": "3"}
RATING_OF_BUCKET |= {"120-149": "4", "150-179": "5", "180+": "6"}
DELINQUENT = frozenset(STATUS_OF_RATING.values()) - {"11"}


def rating(days_past_due: int) -> str:
    steps = ((180, "6"), (150, "5"), (120, "4"), (90, "3"), (60, "2"), (30, "1"))
    return next((r for floor, r in steps if days_past_due >= floor), "0")


def dollars(value: Any) -> int:
    return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def mmddyyyy(value: date | None) -> str:
    return value.strftime("%m%d%Y") if value else "00000000"


def schedule_frequency(dues: list[date]) -> str | None:
    """The schedule's Terms Frequency when every gap agrees (None: not checked)."""
    if len(dues) < 2:
        return "P"
    gaps = {(b - a).days for a, b in itertools.pairwise(dues)}
    if gaps <= {7}:
        return "W"
    if gaps <= {14}:
        return "B"
    if gaps <= set(range(28, 32)):
        return "M"
    return None


def expected(
    account: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    zone: ZoneInfo,
    now: datetime,
    since: datetime,
    seen: Mapping[str, Mapping[str, str]],
    cycle_days: Mapping[str, date],
) -> dict[str, Any]:
    a = account
    balance = Decimal(a["outstanding"])
    dpd = int(a["days_past_due"])
    reversed_ids = {h["ref"] for h in history if h["kind"] == "reversal"}
    payments = [
        (datetime.fromisoformat(h["at"]), Decimal(h["amount"]))
        for h in history
        if h["kind"] == "payment"
        and h["ref"] not in reversed_ids
        and datetime.fromisoformat(h["at"]) < now
    ]
    last = max(payments, default=None, key=lambda p: p[0])
    last_on = last[0].astimezone(zone).date() if last else None
    paid_off = balance == 0
    status = "13" if paid_off else STATUS_OF_RATING[rating(dpd)]
    # paid: the rating of the bucket it left when it last became current
    cures = [h for h in history if h["kind"] == "bucket_change" and h["to_bucket"] == "current"]
    pay_rating = (RATING_OF_BUCKET[cures[-1]["from_bucket"]] if cures else "0") if paid_off else ""
    info = last_on if paid_off and last_on else now.date()
    plan = a.get("plan")
    plan_running = bool(plan and plan["status"] == "active")
    if paid_off:
        scheduled = Decimal(0)
    else:
        source = plan["installments"] if plan and plan_running else a["installments"]
        pairs = sorted((date.fromisoformat(i["due_date"]), Decimal(i["amount"])) for i in source)
        scheduled = next((x for d, x in pairs if d >= now.date()), pairs[-1][1])
    late = status in DELINQUENT or (paid_off and pay_rating != "0")
    dofd = date.fromisoformat(a["first_delinquency"]) if late and a["first_delinquency"] else None
    opened = date.fromisoformat(a["opened_on"])
    profile = ""
    first = min(cycle_days)
    for back in range(1, 25):
        index = info.year * 12 + info.month - 1 - back
        month = f"{index // 12:04d}-{index % 12 + 1:02d}"
        day = cycle_days.get(month)
        if day is None:
            profile += "B" if month < first else "D"
        elif opened > day:
            profile += "B"
        else:
            profile += seen.get(month, {}).get(a["account_id"], "0")
    dues = sorted(date.fromisoformat(i["due_date"]) for i in a["installments"])
    return {
        "status": status,
        "rating": pay_rating,
        "highest_credit": Decimal(a["principal"]),
        "terms": len(a["installments"]),
        "frequency": schedule_frequency(dues),
        "scheduled": scheduled,
        "actual": sum((x for at, x in payments if since <= at), Decimal(0)),
        "balance": Decimal(0) if paid_off else balance,
        "past_due": Decimal(0) if paid_off else Decimal(a["overdue"]),
        "info": info,
        "dofd": dofd,
        "closed": info if paid_off else None,
        "last_payment": last_on,
        "last_amount": last[1] if last else None,
        "comment": "AC" if plan_running else "",
        "history": profile,
        "opened": opened,
        "dpd": dpd,
    }


def differences(
    record: Mapping[str, Any], e: Mapping[str, Any], pre_notice: date | None = None
) -> dict[str, tuple[Any, Any]]:
    """Field -> (in the record, expected) for every field that disagrees."""
    if "AccountStatus" in record:
        got: dict[str, Any] = {
            "AccountStatus": record["AccountStatus"],
            "PaymentRating": record["PaymentRating"],
            "HighestCredit": int(record["HighestCredit"]),
            "TermsDuration": record["TermsDuration"],
            "TermsFrequency": record["TermsFrequency"],
            "ScheduledMonthlyPaymentAmount": int(record["ScheduledMonthlyPaymentAmount"]),
            "ActualPaymentAmount": int(record["ActualPaymentAmount"]),
            "CurrentBalance": int(record["CurrentBalance"]),
            "AmountPastDue": int(record["AmountPastDue"]),
            "DateAccountInformation": record["DateAccountInformation"],
            "DateFirstDelinquency": record["DateFirstDelinquency"],
            "DateClosed": record["DateClosed"],
            "DateLastPayment": record["DateLastPayment"],
            "DateOpened": record["DateOpened"],
            "SpecialComment": record["SpecialComment"],
            "PaymentHistoryProfile": record["PaymentHistoryProfile"],
        }
        want: dict[str, Any] = {
            "AccountStatus": e["status"],
            "PaymentRating": e["rating"],
            "HighestCredit": dollars(e["highest_credit"]),
            "TermsDuration": f"{e['terms']:03d}",
            "TermsFrequency": e["frequency"] or record["TermsFrequency"],
            "ScheduledMonthlyPaymentAmount": dollars(e["scheduled"]),
            "ActualPaymentAmount": dollars(e["actual"]),
            "CurrentBalance": dollars(e["balance"]),
            "AmountPastDue": dollars(e["past_due"]),
            "DateAccountInformation": mmddyyyy(e["info"]),
            "DateFirstDelinquency": mmddyyyy(e["dofd"]),
            "DateClosed": mmddyyyy(e["closed"]),
            "DateLastPayment": mmddyyyy(e["last_payment"]),
            "DateOpened": mmddyyyy(e["opened"]),
            "SpecialComment": e["comment"],
            "PaymentHistoryProfile": e["history"],
        }
    else:

        def money(value: Any) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        def day(value: date | None) -> str | None:
            return value.isoformat() if value else None

        names: tuple[str, ...] = (
            "status",
            "installments",
            "installment_frequency",
            "last_payment_date",
        )
        names += ("first_delinquency_date", "information_date", "closed_on", "overdue_days")
        got = {name: record[name] for name in (*names, "plan", "pre_notice_date")}
        for name in ("original_amount", "balance", "overdue_amount", "installment_amount"):
            got[name] = money(record[name])
        got["paid_in_period"] = money(record["paid_in_period"])
        got["last_payment_amount"] = money(record["last_payment_amount"])
        want = {
            "status": e["status"],
            "original_amount": e["highest_credit"],
            "balance": e["balance"],
            "overdue_amount": e["past_due"],
            "installment_amount": e["scheduled"],
            "installments": e["terms"],
            "installment_frequency": e["frequency"] or record["installment_frequency"],
            "paid_in_period": e["actual"],
            "last_payment_date": day(e["last_payment"]),
            "last_payment_amount": e["last_amount"],
            "first_delinquency_date": day(e["dofd"]),
            "information_date": day(e["info"]),
            "closed_on": day(e["closed"]),
            "overdue_days": 0 if e["status"] == "13" else e["dpd"],
            "plan": e["comment"] == "AC",
            "pre_notice_date": day(pre_notice) if pre_notice else record["pre_notice_date"],
        }
    return {k: (got[k], want[k]) for k in want if got[k] != want[k]}


def follows(earlier: Mapping[str, str], later: Mapping[str, str]) -> list[str]:
    """What breaks month-to-month consistency between two Metro 2 records of one account in
    consecutive cycles: the profile shifts by one with last month's status first, and a
    delinquency keeps its first date."""
    problems: list[str] = []
    if later["AccountStatus"] == "13":
        return problems  # its Date of Account Information is the payoff's, not the cycle's
    before, after = earlier["PaymentHistoryProfile"], later["PaymentHistoryProfile"]
    if after[1:] != before[:23]:
        problems.append("history profile not last month's shifted")
    if after[0] != RATING_OF_STATUS.get(earlier["AccountStatus"], after[0]):
        problems.append("history profile does not start with last month's status")
    if (
        earlier["AccountStatus"] in DELINQUENT
        and later["AccountStatus"] in DELINQUENT
        and later["DateFirstDelinquency"] != earlier["DateFirstDelinquency"]
    ):
        problems.append("date of first delinquency moved while delinquent")
    return problems
