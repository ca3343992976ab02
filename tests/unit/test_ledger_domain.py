from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ledger.domain.allocation import (
    Allocation,
    Installment,
    LedgerError,
    allocate,
    apply,
    validate_schedule,
)
from services.ledger.domain.delinquency import (
    BUCKETS,
    Due,
    bucket_of,
    days_past_due,
    local_date,
    overdue,
)

D = Decimal


def schedule(*amounts: str, first: date = date(2026, 10, 15)) -> list[Installment]:
    return [
        Installment(n, first + timedelta(days=30 * (n - 1)), D(a)) for n, a in enumerate(amounts, 1)
    ]


def dues(installments: list[Installment]) -> list[Due]:
    return [Due(i.due_date, i.outstanding) for i in installments]


# --- allocation ----------------------------------------------------------------------------------


def test_payment_fills_the_oldest_unpaid_instalment_first() -> None:
    applied = allocate(schedule("100.00", "100.00", "100.00"), D("150.00"))
    assert applied.allocations == (Allocation(1, D("100.00")), Allocation(2, D("50.00")))
    assert applied.unallocated == 0


def test_partly_paid_instalment_is_completed_before_the_next() -> None:
    installments = apply(schedule("100.00", "100.00"), [Allocation(1, D("40.00"))])
    applied = allocate(installments, D("80.00"))
    assert applied.allocations == (Allocation(1, D("60.00")), Allocation(2, D("20.00")))


def test_overpayment_is_kept_as_unallocated_credit() -> None:
    applied = allocate(schedule("100.00"), D("120.50"))
    assert applied.allocated == D("100.00")
    assert applied.unallocated == D("20.50")


@pytest.mark.parametrize("amount", ["0", "-5.00"])
def test_non_positive_payment_is_refused(amount: str) -> None:
    with pytest.raises(LedgerError, match="positive"):
        allocate(schedule("100.00"), D(amount))


def test_reversal_undoes_exactly_its_own_allocation() -> None:
    base = schedule("100.00", "100.00", "100.00")
    first = allocate(base, D("150.00"))
    after_first = apply(base, first.allocations)
    second = allocate(after_first, D("100.00"))
    after_both = apply(after_first, second.allocations)
    reversed_first = apply(after_both, first.allocations, sign=-1)
    assert [i.paid for i in reversed_first] == [D("0"), D("50.00"), D("50.00")]


def test_cent_amounts_stay_exact() -> None:
    applied = allocate(schedule("33.33", "33.33", "33.34"), D("66.67"))
    assert applied.allocations == (
        Allocation(1, D("33.33")),
        Allocation(2, D("33.33")),
        Allocation(3, D("0.01")),
    )
    assert applied.allocated == D("66.67")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(1, date(2026, 1, 1), D(10)), (3, date(2026, 2, 1), D(10))], "installment_no"),
        ([(1, date(2026, 2, 1), D(10)), (2, date(2026, 1, 1), D(10))], "dates must go forward"),
        ([(1, date(2026, 2, 1), D(10)), (2, date(2026, 2, 1), D(10))], "dates must go forward"),
        ([(1, date(2026, 2, 1), D(0))], "positive"),
    ],
)
def test_schedule_out_of_order_or_non_positive_is_refused(rows, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        validate_schedule(rows)


amounts = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


@given(st.lists(amounts, min_size=1, max_size=24), amounts)
def test_allocations_always_sum_to_the_payment(instalment_amounts, payment) -> None:
    installments = schedule(*map(str, instalment_amounts))
    applied = allocate(installments, payment)
    assert applied.allocated + applied.unallocated == payment
    assert all(a.amount > 0 for a in applied.allocations)
    after = apply(installments, applied.allocations)
    assert all(0 <= i.paid <= i.amount for i in after)
    # the oldest instalments are the ones paid: once one is short, none after it got anything
    paid_flags = [i.paid > 0 for i in after]
    assert paid_flags == sorted(paid_flags, reverse=True)


@given(st.lists(amounts, min_size=1, max_size=12), st.lists(amounts, min_size=1, max_size=6))
def test_reversing_every_payment_restores_the_schedule(instalment_amounts, payments) -> None:
    installments = schedule(*map(str, instalment_amounts))
    applied_each = []
    for payment in payments:
        applied = allocate(installments, payment)
        applied_each.append(applied)
        installments = apply(installments, applied.allocations)
    for applied in reversed(applied_each):
        installments = apply(installments, applied.allocations, sign=-1)
    assert all(i.paid == 0 for i in installments)


# --- delinquency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dpd", "bucket"),
    [
        (0, "current"),
        (1, "1-29"),
        (29, "1-29"),
        (30, "30-59"),
        (59, "30-59"),
        (60, "60-89"),
        (90, "90-119"),
        (120, "120-149"),
        (150, "150-179"),
        (179, "150-179"),
        (180, "180+"),
        (2000, "180+"),
    ],
)
def test_bucket_boundaries(dpd: int, bucket: str) -> None:
    assert bucket_of(dpd) == bucket


def test_buckets_are_the_design_contracts_eight() -> None:
    assert [name for _, name in BUCKETS] == [
        "current",
        "1-29",
        "30-59",
        "60-89",
        "90-119",
        "120-149",
        "150-179",
        "180+",
    ]


def test_days_past_due_count_from_the_oldest_unpaid_due_date() -> None:
    installments = schedule("100", "100")  # due 2026-10-15 and 2026-11-14
    assert days_past_due(dues(installments), date(2026, 10, 15)) == 0
    assert days_past_due(dues(installments), date(2026, 10, 16)) == 1
    assert days_past_due(dues(installments), date(2026, 11, 20)) == 36
    paid_first = apply(installments, [Allocation(1, D(100))])
    assert days_past_due(dues(paid_first), date(2026, 11, 20)) == 6


def test_grace_period_delays_delinquency_but_not_the_count() -> None:
    installments = schedule("100")
    assert days_past_due(dues(installments), date(2026, 10, 18), grace_days=3) == 0
    assert days_past_due(dues(installments), date(2026, 10, 19), grace_days=3) == 4


def test_month_end_due_dates_count_calendar_days() -> None:
    due = [Due(date(2026, 1, 31), D(10))]
    assert days_past_due(due, date(2026, 3, 1)) == 29
    assert days_past_due([Due(date(2024, 2, 29), D(10))], date(2024, 3, 1)) == 1


def test_the_customers_timezone_decides_which_day_it_is() -> None:
    instant = datetime(2026, 10, 15, 17, 30, tzinfo=UTC)
    assert local_date(instant, "Asia/Shanghai") == date(2026, 10, 16)  # 01:30 next day
    assert local_date(instant, "America/Los_Angeles") == date(2026, 10, 15)
    due = [Due(date(2026, 10, 15), D(10))]
    assert days_past_due(due, local_date(instant, "Asia/Shanghai")) == 1
    assert days_past_due(due, local_date(instant, "America/Los_Angeles")) == 0


def test_overdue_is_what_fell_due_and_is_unpaid() -> None:
    installments = apply(schedule("100", "100", "100"), [Allocation(1, D(30))])
    assert overdue(dues(installments), date(2026, 11, 20)) == D(170)
    assert overdue(dues(installments), date(2026, 10, 15)) == D(0)


@given(
    st.lists(amounts, min_size=1, max_size=12),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=10),
)
def test_days_past_due_never_drop_as_time_passes_without_payment(
    instalment_amounts, start, step, grace
) -> None:
    installments = dues(schedule(*map(str, instalment_amounts)))
    today = date(2026, 10, 1) + timedelta(days=start)
    later = today + timedelta(days=step)
    assert days_past_due(installments, later, grace) >= days_past_due(installments, today, grace)


@given(st.lists(amounts, min_size=1, max_size=12), amounts, st.integers(0, 400))
def test_nothing_overdue_exactly_when_every_due_instalment_is_paid(
    instalment_amounts, payment, offset
) -> None:
    installments = schedule(*map(str, instalment_amounts))
    installments = apply(installments, allocate(installments, payment).allocations)
    today = date(2026, 10, 1) + timedelta(days=offset)
    all_due_paid = all(i.outstanding == 0 for i in installments if i.due_date < today)
    assert (overdue(dues(installments), today) == 0) == all_due_paid
    if all_due_paid:
        assert days_past_due(dues(installments), today) == 0
