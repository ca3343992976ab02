"""What each account's record in a reporting cycle is, and whether it may go: the gates.

Pure: ``decide(facts, now, rules)`` returns a submitted, corrected, blocked or skipped verdict,
with the ids of the gates that failed. A negative record is submitted only when every gate of
the customer's country passes; an open dispute is reported flagged (US compliance condition
``XB``, ``XC``/``XH`` once resolved; CN ``disputed``), never as plain delinquency."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from services.bureau.domain.figures import status_for

NEGATIVE_STATUSES = frozenset({"71", "78", "80", "82", "83", "84", "93", "97"})
Kind = Literal["submitted", "corrected", "blocked", "skipped"]
Dispute = Literal["open", "resolved", "resolved_disagrees"] | None


@dataclass(frozen=True)
class Rules:
    pre_notice_days: int = 14  # CN: the pre-notice delivered this long before the report
    notice_wait_days: int = 14  # US: how long a notice may come back undeliverable


@dataclass(frozen=True)
class Identity:
    full_name: str | None
    national_id: str | None
    birth_date: date | None
    postal_address: str | None


@dataclass(frozen=True)
class Facts:
    account_id: str
    country: str | None
    bucket: str
    days_past_due: int
    overdue: Decimal
    identity: Identity
    balance: Decimal | None = None  # the whole outstanding balance; None: never heard of it
    flags: frozenset[str] = frozenset()
    dispute: Dispute = None
    plan_active: bool = False
    plan_hardship: bool = False  # agreed under hardship
    plan_kind: str | None = None  # installments | extension | settlement
    pre_notice_delivered_at: datetime | None = None
    notice_sent_at: datetime | None = None
    notice_returned_at: datetime | None = None
    conversation_at: datetime | None = None
    reconciled: bool = True
    reported_status: str | None = None  # what the last cycle submitted for it
    # the bureau rejected the last record and nothing about the account has changed since
    rejected_unchanged: bool = False


def special_comment(facts: Facts) -> str:
    """Metro 2's special comment for a plan in force: a payment holiday agreed under hardship
    is forbearance (CP); every other plan, a hardship instalment plan included, is a payment
    agreement (AC). Nothing without a plan."""
    if not facts.plan_active:
        return ""
    if facts.plan_hardship and facts.plan_kind == "extension":
        return "CP"
    return "AC"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    status: str = ""
    compliance_code: str = ""
    special_comment: str = ""
    failed: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


US_ADDRESS = re.compile(
    r"^(?P<line>[^,]+),\s*(?P<city>[^,]+),\s*(?P<state>[A-Z]{2})\s+(?P<zip>\d{5}(\d{4})?)$"
)


def us_address(postal: str | None) -> tuple[str, str, str, str] | None:
    """(line, city, state, zip) of "1 Main St, Springfield, IL 62701", else None."""
    found = US_ADDRESS.match((postal or "").strip())
    if not found:
        return None
    return found["line"], found["city"], found["state"], found["zip"]


def identity_complete(country: str, identity: Identity) -> bool:
    if not identity.full_name or not identity.birth_date or not identity.national_id:
        return False
    if country == "US":
        ssn = identity.national_id.replace("-", "")
        return ssn.isdigit() and len(ssn) == 9 and us_address(identity.postal_address) is not None
    return len(identity.national_id) == 18 and bool(identity.postal_address)  # 居民身份证


def five_level(days_past_due: int) -> int:
    """CN five-level classification: 1 正常, 2 关注, 3 次级, 4 可疑, 5 损失."""
    if days_past_due <= 0:
        return 1
    if days_past_due < 90:
        return 2
    if days_past_due < 180:
        return 3
    if days_past_due < 360:
        return 4
    return 5


def compliance_code(dispute: Dispute) -> str:
    return {"open": "XB", "resolved": "XH", "resolved_disagrees": "XC"}.get(dispute or "", "")


def decide(facts: Facts, now: datetime, rules: Rules) -> Verdict:
    country = facts.country or "CN"
    prefix = country if country in ("CN", "US") else "CN"
    negative = facts.days_past_due >= 30
    was_negative = facts.reported_status in NEGATIVE_STATUSES
    code = compliance_code(facts.dispute)
    if not negative and not was_negative:
        return Verdict("skipped")
    failed: list[str] = []
    # Gates every record must pass, favourable or not.
    if not identity_complete(country, facts.identity):
        failed.append(f"{prefix}.bureau.identity")
    if not facts.reconciled:
        failed.append(f"{prefix}.bureau.reconciled")
    if "bankruptcy" in facts.flags:
        failed.append(f"{prefix}.bureau.bankruptcy")
    if "legal_hold" in facts.flags:
        failed.append(f"{prefix}.bureau.legal-hold")
    if facts.rejected_unchanged:
        failed.append(f"{prefix}.bureau.rejected-unchanged")
    if not negative:
        # Cured, paid, reversed or back to current: correct what was reported. 13 says the
        # balance is zero; a cured account that still owes principal is current, 11.
        status = "13" if facts.balance == 0 else "11"
        comment = special_comment(facts)
        if failed:
            return Verdict("blocked", status, code, comment, tuple(failed))
        return Verdict("corrected", status, code, comment)
    status = status_for(facts.days_past_due)  # at the Date of Account Information
    if status not in NEGATIVE_STATUSES:
        failed.append(f"{prefix}.bureau.min-dpd")
    if prefix == "CN":
        delivered = facts.pre_notice_delivered_at
        if delivered is None or now - delivered < timedelta(days=rules.pre_notice_days):
            failed.append("CN.bureau.pre-notice")
    else:
        talked = facts.conversation_at is not None
        sent = facts.notice_sent_at
        returned = facts.notice_returned_at
        if not talked:
            if sent is None:
                failed.append("US.bureau.communicated")
            elif returned is not None and returned >= sent:
                failed.append("US.bureau.notice-returned")
            elif now - sent < timedelta(days=rules.notice_wait_days):
                failed.append("US.bureau.notice-wait")
    comment = special_comment(facts)
    if failed:
        return Verdict("blocked", status, code, comment, tuple(failed))
    if was_negative and facts.reported_status != status and facts.plan_active:
        return Verdict("corrected", status, code, comment)
    return Verdict("submitted", status, code, comment)
