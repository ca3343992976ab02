"""The scheduler's second-tier policies, pure: what pending steps do when the ledger's news
arrives."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from services.scheduler.domain import policies
from services.scheduler.domain.compliance import RollingCap, history_days
from services.scheduler.domain.packs import load_packs

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
CN = load_packs()["CN"]


def test_a_payment_that_clears_the_arrears_ends_the_treatment() -> None:
    intent = policies.after_payment(Decimal("0.00"), CN.settle("part_payment"), NOW)
    assert intent == policies.Cancel("nothing_overdue")


def test_a_part_payment_earns_the_packs_breather_citing_its_rule() -> None:
    intent = policies.after_payment(Decimal("10.00"), CN.settle("part_payment"), NOW)
    assert intent == policies.Defer(
        datetime(2026, 12, 5, 9, 30, tzinfo=UTC), "CN.settle.part-payment"
    )


def test_a_promise_holds_the_steps_until_the_day_after_its_date() -> None:
    intent = policies.promise_hold(date(2026, 12, 10), CN.pause("promise_pending"))
    assert intent == policies.Defer(datetime(2026, 12, 11, tzinfo=UTC), "CN.pause.promise-pending")


def test_a_new_bucket_restarts_the_treatment_and_current_ends_it() -> None:
    assert policies.after_bucket_change("30-59", "1-29", 3) == policies.Restart()
    assert policies.after_bucket_change("1-29", "1-29", 0) == policies.Restart()
    assert policies.after_bucket_change("1-29", "1-29", 2) is None
    assert policies.after_bucket_change("current", "1-29", 2) == policies.Cancel("nothing_overdue")


def test_a_broken_promise_resumes_held_steps_or_restarts_without_any() -> None:
    assert policies.after_broken_promise(2) == policies.Resume()
    assert policies.after_broken_promise(0) == policies.Restart()


def test_the_contact_history_loaded_covers_the_longest_rule_of_any_pack() -> None:
    packs = load_packs()
    assert history_days(packs.values()) == 8  # US: 7 days after a conversation, + a day of zones
    month = RollingCap.model_validate(
        {"id": "CN.test.30-in-30", "source": "t", "kind": "rolling_cap", "max": 30, "days": 30}
    )
    longer = CN.model_copy(update={"rules": (*CN.rules, month)})
    assert history_days([*packs.values(), longer]) == 31  # a new longer rule widens the window


def test_a_hardship_pause_lasts_the_breather_or_until_the_day_after_the_date_given() -> None:
    from datetime import UTC, date, datetime

    from services.scheduler.domain.compliance import HardshipPause
    from services.scheduler.domain.policies import hardship_pause

    breather = HardshipPause(id="CN.pause.hardship", kind="hardship_pause", days=14)
    now = datetime(2026, 12, 2, 4, tzinfo=UTC)
    assert hardship_pause(now, breather, None, "Asia/Shanghai").until == datetime(
        2026, 12, 16, 4, tzinfo=UTC
    )
    later = hardship_pause(now, breather, date(2027, 1, 10), "Asia/Shanghai")
    assert later.until == datetime(2027, 1, 10, 16, tzinfo=UTC)  # 11 Jan 00:00 in Shanghai
    assert later.rule == "CN.pause.hardship"
    sooner = hardship_pause(now, breather, date(2026, 12, 5), "Asia/Shanghai")
    assert sooner.until == datetime(2026, 12, 16, 4, tzinfo=UTC)  # never shorter than the breather


def test_a_reminder_lapses_once_its_due_date_has_passed_in_the_customers_calendar() -> None:
    from datetime import UTC, datetime

    from services.scheduler.domain.policies import reminder_lapsed

    context = {"due_date": "2026-12-05"}
    # 23:30 UTC on the 5th is already the 6th in Shanghai, still the 5th in New York
    at = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    assert reminder_lapsed(context, at, "Asia/Shanghai")
    assert not reminder_lapsed(context, at, "America/New_York")
    assert not reminder_lapsed(None, at, "Asia/Shanghai")
