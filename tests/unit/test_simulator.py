"""The simulator's pure parts: its book and its customers' draws are functions of the seed and of
what is decided, and the report's figures count what the events say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from shared.envelope import CloudEvent, new_event
from shared.events import (
    AccountCured,
    DelinquencyChanged,
    Payload,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
    PlanAgreed,
    PlanBroken,
    PlanInstallment,
    PromiseKept,
    PromiseMade,
)
from shared.history import first_seen
from tools.simulator.figures import compute, difference_interval, wilson
from tools.simulator.model import Params, book, midnight_moves, react

PARAMS = Params.load()
T0 = datetime(2026, 12, 3, 5, 30, tzinfo=UTC)


def test_the_same_seed_makes_the_same_book_and_another_seed_another() -> None:
    first, again, other = book(PARAMS, 7, 300), book(PARAMS, 7, 300), book(PARAMS, 8, 300)
    assert first == again
    assert first != other
    assert {c.country for c in first} == {"CN", "US"}
    for c in first:  # every loan still runs when the campaign starts
        assert any(i.due_date >= PARAMS.start.date() for i in c.schedule)
        assert sum(i.amount for i in c.schedule) == c.principal


def test_a_reaction_depends_on_what_is_decided_not_on_when_it_is_asked() -> None:
    customers = book(PARAMS, 7, 50)
    asked = [
        react(PARAMS, 7, c, contact_key=f"k{c.n}", channel="voice", offer=True, at=T0)
        for c in customers
    ]
    backwards = [
        react(PARAMS, 7, c, contact_key=f"k{c.n}", channel="voice", offer=True, at=T0)
        for c in reversed(customers)
    ]
    assert asked == list(reversed(backwards))
    assert len({r.status for r in asked}) > 2  # the draws differ between customers


def test_every_step_is_inside_the_shanghai_window_at_least_twice_a_day() -> None:
    steps = PARAMS.steps()
    assert len(steps) == PARAMS.days * len(PARAMS.step_hours)
    by_day: dict[object, int] = {}
    for at in steps:
        local = at.astimezone(ZoneInfo("Asia/Shanghai"))
        if 8 <= local.hour < 22:
            by_day[local.date()] = by_day.get(local.date(), 0) + 1
    assert min(by_day.values()) >= 2
    for zone in ("America/New_York", "America/Los_Angeles"):
        days = {
            at.astimezone(ZoneInfo(zone)).date()
            for at in steps
            if 8 <= at.astimezone(ZoneInfo(zone)).hour < 21
        }
        assert len(days) >= PARAMS.days - 1


def event(data: Payload, at: datetime = T0) -> CloudEvent:
    return new_event(data, source="/test", key="C1", time=at)


def test_figures_count_recovery_promises_and_plans_from_the_events() -> None:
    book_rows = [
        {
            "account_id": "A1",
            "customer_id": "C1",
            "currency": "CNY",
            "country": "CN",
            "segment": "prime",
            "product": "p",
            "behind_at_start": 0,
        }
    ]
    money = Decimal
    events = [
        event(
            PaymentMissed(
                account_id="A1",
                customer_id="C1",
                installment_no=1,
                due_date=T0.date(),
                amount_due=money("300"),
                total_overdue=money("300"),
                currency="CNY",
                days_past_due=1,
                bucket="1-29",
            )
        ),
        event(PromiseMade(account_id="A1", amount=money("300"), due_date=T0.date())),
        event(PromiseKept(account_id="A1", customer_id="C1")),
        event(
            PlanAgreed(
                plan_id="P1",
                account_id="A1",
                kind="installments",
                installments=[PlanInstallment(due_date=T0.date(), amount=money("1"))],
            )
        ),
        event(PlanActivated(account_id="A1", customer_id="C1", plan_id="P1")),
        event(PlanBroken(account_id="A1", customer_id="C1", plan_id="P1")),
        # the ledger announces the cure before the payment that caused it
        event(
            DelinquencyChanged(
                account_id="A1",
                customer_id="C1",
                previous_bucket="1-29",
                bucket="current",
                days_past_due=0,
                total_overdue=money("0"),
                currency="CNY",
            ),
            T0 + timedelta(days=1),
        ),
        event(AccountCured(account_id="A1", customer_id="C1"), T0 + timedelta(days=1)),
        event(
            PaymentReceived(
                account_id="A1",
                customer_id="C1",
                payment_id="X",
                amount=money("500"),
                currency="CNY",
                total_overdue=money("0"),
            ),
            T0 + timedelta(days=1),
        ),
    ]
    figures, accounts = compute(
        events, book_rows, start={"A1": "current"}, end={"A1": "current"}, decisions=[], run={}
    )
    assert figures["recovery"]["by_currency"] == {"CNY": "300.00"}  # not the 200 prepaid
    assert figures["promises"] == {"made": 1, "kept": 1, "broken": 0, "open": 0}
    assert (figures["plans"]["agreed"], figures["plans"]["broken"]) == (1, 1)
    assert figures["delinquency"]["cured_by_end"] == 1
    assert accounts["A1"]["recovered"] == "300.00"


def test_intervals_cover_the_estimate_and_narrow_with_more_data() -> None:
    low, high = wilson(20, 100)
    assert low < 0.2 < high
    wide, narrow = wilson(2, 10), wilson(200, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    same = difference_interval([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])
    assert same == difference_interval([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])  # seeded
    assert same[1] <= same[0] <= same[2]


def test_an_event_published_again_with_its_id_is_counted_once_and_a_new_id_is_not() -> None:
    missed = PaymentMissed(
        account_id="A1",
        customer_id="C1",
        installment_no=1,
        due_date=T0.date(),
        amount_due=Decimal("300"),
        total_overdue=Decimal("300"),
        currency="CNY",
        days_past_due=1,
        bucket="1-29",
    )
    first, second = event(missed, T0), event(missed, T0)
    seen: set[tuple[str, str]] = set()
    assert first_seen([first, first], seen) == [first]
    # a later drain sees the repeat again (an outbox resending after a crash) and a genuine
    # second emission, which the reconciliation must still be able to catch
    assert first_seen([first, second], seen) == [second]


def test_the_humane_figures_do_not_depend_on_the_order_topics_are_read_in() -> None:
    """The report reads four topics whose relative order differs from one read to the next:
    a callback answered before its request was read still counts."""
    from datetime import date

    from shared.events import (
        CallbackRequested,
        ContactAttempted,
        ContactRequested,
        HardshipReported,
        InstallmentDueSoon,
        PaymentMissed,
    )
    from tools.simulator.figures import Humane

    at = datetime(2026, 12, 5, 3, tzinfo=UTC)

    def ev(data: object) -> CloudEvent:
        return new_event(data, source="/test", key="C1", time=at)  # type: ignore[arg-type]

    events = [
        ev(CallbackRequested(account_id="A1", customer_id="C1", channel="voice", at=at)),
        ev(
            ContactRequested(
                contact_id="K1",
                account_id="A1",
                customer_id="C1",
                channel="voice",
                template="callback",
                not_before=at,
                not_after=at + timedelta(hours=2),
                strategy="s",
                variant="champion",
                purpose="callback",
            )
        ),
        ev(
            ContactAttempted(
                contact_id="K1",
                account_id="A1",
                channel="voice",
                outcome="right_party",
                attempted_at=at,
            )
        ),
        ev(HardshipReported(account_id="A1", customer_id="C1", reason="illness", source="sms")),
        ev(
            InstallmentDueSoon(
                account_id="A2",
                customer_id="C2",
                installment_no=1,
                due_date=date(2026, 12, 8),
                amount=Decimal("10.00"),
                days_until_due=3,
            )
        ),
        ev(
            PaymentMissed(
                account_id="A2",
                customer_id="C2",
                installment_no=1,
                due_date=date(2026, 12, 8),
                amount_due=Decimal("10.00"),
                total_overdue=Decimal("10.00"),
                currency="CNY",
                days_past_due=1,
                bucket="1-29",
            )
        ),
    ]
    results = []
    for order in (events, list(reversed(events))):
        humane = Humane()
        for event in order:
            humane.see(event)
        results.append(humane.figures({"A1": "1-29"}))
    assert results[0] == results[1]
    assert results[0]["callbacks"]["answered"] == 1
    assert results[0]["hardship"]["cases"] == 1
    assert sum(g["instalments"] for g in results[0]["reminders"]["paid_by_due_date"].values()) == 1


def test_the_clock_stops_a_second_before_and_at_each_local_midnight_between_two_steps() -> None:
    after = datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
    before = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
    moves = midnight_moves(["Asia/Shanghai", "Asia/Urumqi", "Asia/Shanghai"], after, before)
    shanghai = datetime(2026, 12, 1, 16, tzinfo=UTC)  # 2 December begins in Shanghai
    urumqi = datetime(2026, 12, 1, 18, tzinfo=UTC)
    second = timedelta(seconds=1)
    assert moves == [shanghai - second, shanghai, urumqi - second, urumqi]


def test_no_midnight_move_lands_on_or_outside_the_steps_around_it() -> None:
    new_york = datetime(2026, 12, 2, 5, tzinfo=UTC)
    assert midnight_moves(["America/New_York"], new_york, new_york + timedelta(hours=12)) == []
    # a step on the midnight itself is that move; only the second before it is added
    assert midnight_moves(["America/New_York"], new_york - timedelta(hours=4), new_york) == [
        new_york - timedelta(seconds=1)
    ]
    assert midnight_moves(["America/New_York"], new_york, new_york) == []


def test_a_local_midnight_follows_daylight_saving_time() -> None:
    # New York leaves daylight saving time on 1 November 2026: its midnight is 04:00 UTC
    # before and 05:00 UTC after
    moves = midnight_moves(
        ["America/New_York"],
        datetime(2026, 10, 31, 12, tzinfo=UTC),
        datetime(2026, 11, 2, 12, tzinfo=UTC),
    )
    assert moves[1::2] == [
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 2, 5, tzinfo=UTC),
    ]
