"""The bureau's pure rules: gates, dispute flags, corrections, and the Metro 2 writer checked by
an independent decoder (tools/metro2check, Go) field by field."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.bureau.domain import metro2
from services.bureau.domain.figures import (
    Statement,
    figures,
    history_profile,
    status_for,
    terms_frequency,
)
from services.bureau.domain.reporting import (
    NEGATIVE_STATUSES,
    Facts,
    Identity,
    Rules,
    decide,
    five_level,
    identity_complete,
)

NOW = datetime(2026, 12, 20, 12, tzinfo=UTC)
RULES = Rules()
ROOT = Path(__file__).resolve().parents[2]
US_ID = Identity(
    "Jane Q Public", "123456789", date(1980, 5, 17), "12 Elm St, Springfield, IL 62701"
)
CN_ID = Identity("王芳", "110101198005170022", date(1980, 5, 17), "北京市东城区1号")
BUCKETS = ["current", "1-29", "30-59", "60-89", "90-119", "120-149", "150-179", "180+"]


def facts(country: str = "US", dpd: int = 45, bucket: str = "30-59", **kw: Any) -> Facts:
    base: dict[str, Any] = {
        "account_id": "A1",
        "country": country,
        "bucket": bucket,
        "days_past_due": dpd,
        "overdue": Decimal("450.00"),
        "identity": US_ID if country == "US" else CN_ID,
        "conversation_at": NOW - timedelta(days=20),
        "pre_notice_delivered_at": NOW - timedelta(days=20),
    }
    return Facts(**(base | kw))


def test_a_cn_account_without_a_delivered_pre_notice_is_blocked() -> None:
    verdict = decide(facts("CN", pre_notice_delivered_at=None), NOW, RULES)
    assert (verdict.kind, verdict.failed) == ("blocked", ("CN.bureau.pre-notice",))


def test_a_cn_pre_notice_must_be_fourteen_days_old() -> None:
    young = decide(facts("CN", pre_notice_delivered_at=NOW - timedelta(days=13)), NOW, RULES)
    assert young.failed == ("CN.bureau.pre-notice",)
    old = decide(facts("CN", pre_notice_delivered_at=NOW - timedelta(days=14)), NOW, RULES)
    assert (old.kind, old.status) == ("submitted", "71")


def test_us_no_passive_collection() -> None:
    never = decide(facts(conversation_at=None), NOW, RULES)
    assert never.failed == ("US.bureau.communicated",)
    sent = NOW - timedelta(days=20)
    returned = decide(
        facts(
            conversation_at=None, notice_sent_at=sent, notice_returned_at=sent + timedelta(days=3)
        ),
        NOW,
        RULES,
    )
    assert returned.failed == ("US.bureau.notice-returned",)
    waiting = decide(
        facts(conversation_at=None, notice_sent_at=NOW - timedelta(days=5)), NOW, RULES
    )
    assert waiting.failed == ("US.bureau.notice-wait",)
    quiet = decide(facts(conversation_at=None, notice_sent_at=sent), NOW, RULES)
    assert quiet.kind == "submitted"


def test_bankruptcy_legal_hold_identity_and_reconciliation_block() -> None:
    assert decide(facts(flags=frozenset({"bankruptcy"})), NOW, RULES).failed == (
        "US.bureau.bankruptcy",
    )
    assert decide(facts(flags=frozenset({"legal_hold"})), NOW, RULES).failed == (
        "US.bureau.legal-hold",
    )
    no_ssn = Identity("Jane Public", None, date(1980, 1, 1), US_ID.postal_address)
    assert decide(facts(identity=no_ssn), NOW, RULES).failed == ("US.bureau.identity",)
    assert decide(facts(reconciled=False), NOW, RULES).failed == ("US.bureau.reconciled",)


def test_a_record_the_bureau_rejected_waits_for_its_data_to_change() -> None:
    assert decide(facts(rejected_unchanged=True), NOW, RULES).failed == (
        "US.bureau.rejected-unchanged",
    )


def test_disputes_are_flagged_xb_then_xh_or_xc() -> None:
    assert decide(facts(dispute="open"), NOW, RULES).compliance_code == "XB"
    assert decide(facts(dispute="resolved"), NOW, RULES).compliance_code == "XH"
    assert decide(facts(dispute="resolved_disagrees"), NOW, RULES).compliance_code == "XC"


def test_a_paid_off_account_that_was_reported_is_corrected_to_13_and_then_left_alone() -> None:
    paid = facts(dpd=0, bucket="current", overdue=Decimal(0), balance=Decimal(0))
    verdict = decide(dataclasses.replace(paid, reported_status="71"), NOW, RULES)
    assert (verdict.kind, verdict.status) == ("corrected", "13")
    assert decide(dataclasses.replace(paid, reported_status="13"), NOW, RULES).kind == "skipped"
    assert decide(facts(dpd=10, bucket="1-29"), NOW, RULES).kind == "skipped"


def test_a_cured_account_that_still_owes_principal_is_corrected_to_11_not_13() -> None:
    cured = facts(
        dpd=0, bucket="current", overdue=Decimal(0), balance=Decimal(6700), reported_status="71"
    )
    verdict = decide(cured, NOW, RULES)
    assert (verdict.kind, verdict.status) == ("corrected", "11")


def test_status_follows_days_past_due_at_the_date_of_account_information() -> None:
    # The bureau's last known bucket may lag a day; the status is the ledger's count's.
    assert decide(facts(dpd=60, bucket="30-59"), NOW, RULES).status == "78"
    assert [status_for(d) for d in (0, 29, 30, 59, 60, 89, 90, 119, 120, 150, 179, 180, 999)] == [
        "11", "11", "71", "71", "78", "78", "80", "80", "82", "83", "83", "84", "84",
    ]  # fmt: skip


def test_five_level_classes() -> None:
    assert [five_level(d) for d in (0, 1, 89, 90, 179, 180, 359, 360)] == [1, 2, 2, 3, 3, 4, 4, 5]


def test_the_history_profile_is_the_months_before_the_date_of_account_information() -> None:
    cycles = {m: date(int(m[:4]), int(m[5:]), 1) for m in ("2026-09", "2026-10", "2026-11")}
    cycles["2026-12"] = date(2026, 12, 1)
    recorded = {"2026-11": "1", "2026-12": "2"}  # the cycle of 2026-12 is this one
    profile = history_profile(recorded, date(2026, 12, 1), cycles, date(2026, 9, 3))
    # November's cycle saw 30-59 days; October's did not look (under 30): 0; September's
    # cycle ran before the account opened; before the first cycle nothing is known
    assert profile == "10B" + "B" * 21
    # a month later the profile is last month's, shifted, with December's value first
    cycles["2027-01"] = date(2027, 1, 1)
    assert (
        history_profile(recorded, date(2027, 1, 1), cycles, date(2026, 9, 3)) == "2" + profile[:23]
    )
    # a month without a cycle, after the first one
    del cycles["2026-10"]
    assert history_profile(recorded, date(2026, 12, 1), cycles, date(2026, 8, 1))[:3] == "1D0"


def D(*values: int) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


def statement(**kw: Any) -> Statement:
    base: dict[str, Any] = {
        "principal": Decimal("1500.00"),
        "opened_on": date(2026, 9, 1),
        "dues": (date(2026, 10, 2), date(2026, 11, 2), date(2026, 12, 2)),
        "amounts": (Decimal(500), Decimal(500), Decimal(500)),
        "balance": Decimal("1500.00"),
        "overdue": Decimal("1000.00"),
        "days_past_due": 60,
        "first_delinquency": date(2026, 10, 2),
    }
    return Statement(**(base | kw))


CYCLES = {"2026-11": date(2026, 11, 1), "2026-12": date(2026, 12, 1)}


def test_an_unpaid_instalment_loan_reports_its_principal_terms_and_whole_balance() -> None:
    f = figures(statement(), "78", "", "", date(2026, 12, 1), CYCLES)
    assert (f.highest_credit, f.current_balance, f.amount_past_due) == D(1500, 1500, 1000)
    assert (f.terms_duration, f.terms_frequency, f.scheduled_payment) == (3, "M", Decimal(500))
    assert (f.actual_payment, f.first_delinquency, f.date_closed) == (
        Decimal(0),
        date(2026, 10, 2),
        None,
    )
    assert f.information_date == date(2026, 12, 1)
    assert f.payment_rating == ""


def test_a_paid_off_account_carries_its_payoff_date_rating_and_first_delinquency() -> None:
    paid = statement(
        balance=Decimal(0),
        overdue=Decimal(0),
        days_past_due=0,
        closed_rating="3",
        last_payment_on=date(2026, 11, 20),
        last_payment_amount=Decimal(1500),
        paid_in_period=Decimal(1500),
    )
    f = figures(paid, "13", "", "", date(2026, 12, 1), CYCLES)
    assert (f.status, f.payment_rating, f.first_delinquency) == ("13", "3", date(2026, 10, 2))
    assert f.information_date == f.date_closed == f.last_payment == date(2026, 11, 20)
    assert (f.highest_credit, f.current_balance, f.scheduled_payment, f.actual_payment) == D(
        1500, 0, 0, 1500
    )
    current = figures(
        dataclasses.replace(paid, closed_rating="0"), "13", "", "", date(2026, 12, 1), CYCLES
    )
    assert (current.payment_rating, current.first_delinquency) == ("0", None)


def test_a_current_account_carries_no_date_of_first_delinquency() -> None:
    f = figures(statement(days_past_due=5), "11", "", "", date(2026, 12, 1), CYCLES)
    assert f.first_delinquency is None


def test_while_a_plan_runs_the_scheduled_payment_is_the_plans_instalment() -> None:
    plan = statement(
        plan_active=True,
        plan_dues=(date(2026, 12, 10), date(2027, 1, 10)),
        plan_amounts=(Decimal("250.00"), Decimal("250.00")),
    )
    assert figures(plan, "78", "", "AC", date(2026, 12, 1), CYCLES).scheduled_payment == 250


def test_terms_frequency_follows_the_schedule() -> None:
    start = date(2026, 1, 5)
    assert terms_frequency([start]) == "P"
    assert terms_frequency([start + timedelta(days=7 * i) for i in range(4)]) == "W"
    assert terms_frequency([start + timedelta(days=14 * i) for i in range(4)]) == "B"
    assert terms_frequency([date(2026, m, 5) for m in range(1, 13)]) == "M"
    assert terms_frequency([date(2026, m, 5) for m in (1, 4, 7, 10)]) == "Q"


fact_strategy = st.builds(
    Facts,
    account_id=st.just("A1"),
    country=st.sampled_from(["US", "CN", None]),
    bucket=st.sampled_from(BUCKETS),
    days_past_due=st.integers(0, 400),
    overdue=st.decimals(0, 100000, places=2),
    identity=st.sampled_from([US_ID, CN_ID, Identity(None, None, None, None)]),
    flags=st.frozensets(st.sampled_from(["bankruptcy", "legal_hold", "fraud", "hardship"])),
    dispute=st.sampled_from([None, "open", "resolved", "resolved_disagrees"]),
    plan_active=st.booleans(),
    pre_notice_delivered_at=st.one_of(
        st.none(), st.integers(0, 40).map(lambda d: NOW - timedelta(days=d))
    ),
    notice_sent_at=st.one_of(st.none(), st.integers(0, 40).map(lambda d: NOW - timedelta(days=d))),
    notice_returned_at=st.one_of(
        st.none(), st.integers(0, 40).map(lambda d: NOW - timedelta(days=d))
    ),
    conversation_at=st.one_of(st.none(), st.just(NOW - timedelta(days=3))),
    reconciled=st.booleans(),
    reported_status=st.sampled_from([None, "11", "13", "71", "80"]),
)


@settings(max_examples=1000)
@given(fact_strategy)
def test_no_submitted_negative_record_lacks_a_passed_gate(f: Facts) -> None:
    verdict = decide(f, NOW, RULES)
    if verdict.kind != "submitted" or verdict.status not in NEGATIVE_STATUSES:
        return
    country = f.country or "CN"
    assert f.days_past_due >= 30
    assert f.reconciled
    assert not f.flags & {"bankruptcy", "legal_hold"}
    assert identity_complete(country, f.identity)
    if country == "US":
        communicated = f.conversation_at is not None or (
            f.notice_sent_at is not None
            and NOW - f.notice_sent_at >= timedelta(days=14)
            and not (f.notice_returned_at and f.notice_returned_at >= f.notice_sent_at)
        )
        assert communicated
    else:
        assert f.pre_notice_delivered_at is not None
        assert NOW - f.pre_notice_delivered_at >= timedelta(days=14)


@settings(max_examples=1000)
@given(fact_strategy)
def test_every_open_dispute_is_flagged(f: Facts) -> None:
    verdict = decide(f, NOW, RULES)
    if f.dispute == "open" and verdict.kind in ("submitted", "corrected"):
        assert verdict.compliance_code == "XB"


# --- Metro 2 ------------------------------------------------------------------------------------

REPORTER = metro2.Reporter("ARREARS0001", "ARREARS BANK", "1 COLLECTION WAY NEW YORK NY 10001")


def a_base(i: int, status: str, code: str = "") -> metro2.Base:
    return metro2.Base(
        account_number=f"ACC{i:06d}",
        date_opened=date(2025, 1, 15),
        highest_credit=Decimal("3000.40"),
        terms_months=12,
        terms_frequency="M",
        scheduled_payment=Decimal("250.00"),
        actual_payment=Decimal("0"),
        status=status,
        history="1" + "0" * 11 + "B" * 12,
        special_comment="",
        compliance_code=code,
        current_balance=Decimal("2750.50") if status != "13" else Decimal(0),
        amount_past_due=Decimal("500.49") if status != "13" else Decimal(0),
        information_date=date(2026, 12, 1),
        first_delinquency=date(2026, 10, 15) if status not in ("11", "13") else None,
        last_payment=date(2026, 9, 1),
        date_closed=date(2026, 12, 1) if status == "13" else None,
        surname="Public",
        first_name="Jane",
        ssn="123456789",
        birth_date=date(1980, 5, 17),
        address_line="12 Elm St",
        city="Springfield",
        state="IL",
        zip_code="62701",
        payment_rating="0" if status == "13" else "",
    )


def write_file(tmp_path: Path) -> tuple[Path, list[str]]:
    stamp = datetime(2026, 12, 1, 9, 30, 5)  # noqa: DTZ001 - Metro 2 time stamps are local
    bases = [
        metro2.base(REPORTER, a_base(i, status, code), stamp)
        for i, (status, code) in enumerate(
            [("71", ""), ("78", "XB"), ("84", ""), ("11", ""), ("13", ""), ("80", "XH")]
        )
    ]
    lines = [
        metro2.header(REPORTER, date(2026, 12, 1), date(2026, 12, 1)),
        *bases,
        metro2.trailer(bases),
    ]
    path = tmp_path / "file.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def checker() -> list[str]:
    go = shutil.which("go")
    assert go, "Go is needed for the independent Metro 2 check (tools/metro2check)"
    return [go, "run", "."]


def test_generated_metro2_file_passes_the_independent_checker(tmp_path: Path) -> None:
    path, _ = write_file(tmp_path)
    result = subprocess.run(
        [*checker(), str(path)], cwd=ROOT / "tools" / "metro2check", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "valid: 6 base records" in result.stderr


def test_the_independent_checker_decodes_every_field_as_written(tmp_path: Path) -> None:
    path, lines = write_file(tmp_path)
    result = subprocess.run(
        [*checker(), "-json", str(path)],
        cwd=ROOT / "tools" / "metro2check",
        capture_output=True,
        text=True,
        check=True,
    )
    decoded = json.loads(result.stdout)
    assert decoded == [metro2.decode(line) for line in lines]
    first = decoded[1]
    assert first["AccountStatus"] == "71"
    assert first["AmountPastDue"] == "000000500"  # whole dollars, zero-filled
    assert first["CurrentBalance"] == "000002751"
    assert first["DateFirstDelinquency"] == "10152026"
    assert first["PaymentHistoryProfile"] == "1" + "0" * 11 + "B" * 12
    assert (first["Surname"], first["FirstName"], first["State"]) == ("PUBLIC", "JANE", "IL")
    assert decoded[2]["ComplianceConditionCode"] == "XB"
    trailer = decoded[-1]
    assert trailer["TotalBaseRecords"] == "000000006"
    assert trailer["BlockCount"] == "000000008"  # unblocked: header, six bases, trailer
    assert trailer["TotalStatusCode71"] == "000000001"


def test_the_independent_checker_rejects_a_broken_file(tmp_path: Path) -> None:
    path, lines = write_file(tmp_path)
    broken = lines[:]
    broken[1] = broken[1][:123] + "ZZ" + broken[1][125:]  # an unknown status
    broken[-1] = broken[-1][:11] + "000000009" + broken[-1][20:]  # a wrong total
    path.write_text("\n".join(broken) + "\n")
    result = subprocess.run(
        [*checker(), str(path)], cwd=ROOT / "tools" / "metro2check", capture_output=True, text=True
    )
    assert result.returncode == 1
    assert 'AccountStatus "ZZ" unknown' in result.stderr
    assert "TotalBaseRecords is 9, the file has 6" in result.stderr


def test_records_are_exactly_426_ascii_bytes_and_refuse_non_numeric_numbers() -> None:
    record = metro2.base(REPORTER, a_base(1, "71"), datetime(2026, 12, 1, 9))  # noqa: DTZ001
    assert len(record) == 426
    assert record.isascii()
    with pytest.raises(ValueError, match="SocialSecurityNumber"):
        metro2.base(REPORTER, dataclasses.replace(a_base(1, "71"), ssn="12-34"), NOW)


def test_the_independent_checker_applies_the_cross_field_rules(tmp_path: Path) -> None:
    path, lines = write_file(tmp_path)
    broken = lines[:]
    past_due = broken[1][:163] + "000009999" + broken[1][172:]  # more past due than owed
    broken[1] = past_due
    paid = lines[5]  # the 13: a balance, no rating, and a first delinquency with rating 0
    paid = paid[:154] + "000000100" + paid[163:]
    paid = paid[:125] + " " + paid[126:]
    broken[5] = paid
    late = lines[3][:189] + "00000000" + lines[3][197:]  # an 84 without its first delinquency
    broken[3] = late
    broken[-1] = broken[-1][:56] + "000000000" + broken[-1][65:]  # block count 0
    path.write_text("\n".join(broken) + "\n")
    result = subprocess.run(
        [*checker(), str(path)], cwd=ROOT / "tools" / "metro2check", capture_output=True, text=True
    )
    assert result.returncode == 1
    for message in (
        "record 2: AmountPastDue 9999 exceeds CurrentBalance 2751",
        "record 6: status 13 (paid, zero balance) with balance 100, past due 0",
        "record 6: status 13 needs a payment rating",
        "record 4: status 84 needs the date of first delinquency",
        "BlockCount is 0, the file has 8",
    ):
        assert message in result.stderr, result.stderr


def test_a_hardship_payment_holiday_is_reported_as_forbearance_and_other_plans_as_agreements() -> (
    None
):
    from services.bureau.domain.reporting import special_comment

    assert special_comment(facts()) == ""
    assert special_comment(facts(plan_active=True)) == "AC"
    assert special_comment(
        facts(plan_active=True, plan_hardship=True, plan_kind="installments")
    ) == ("AC")
    holiday = facts(plan_active=True, plan_hardship=True, plan_kind="extension")
    assert special_comment(holiday) == "CP"
    assert (
        special_comment(facts(plan_active=False, plan_hardship=True, plan_kind="extension")) == ""
    )


def test_a_plan_the_ledger_has_ended_but_this_service_has_not_heard_of_is_not_reconciled() -> None:
    from services.bureau.domain.records import reconciled

    row = {
        "account_id": "A1", "currency": "CNY", "overdue": Decimal("800"), "balance": Decimal("800"),
        "days_past_due": 30, "bucket": "30-59", "plan_active": True,
    }  # fmt: skip
    standing = {
        "overdue": "800", "balance": "800", "bucket": "30-59", "currency": "CNY",
        "days_past_due": 30,
    }  # fmt: skip
    assert reconciled(row, {"A1": standing | {"plan_active": True}})
    assert not reconciled(row, {"A1": standing | {"plan_active": False}})
    assert reconciled(row, {"A1": standing})  # a ledger that does not say: amounts only
