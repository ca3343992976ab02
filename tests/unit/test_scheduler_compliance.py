"""The compliance engine: one plain example per rule of both packs, then properties over random
customers, histories, time zones (UTC+14, UTC-12, DST changes) and times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.domain.compliance import (
    Allowed,
    Contact,
    Forbidden,
    Party,
    Proposal,
    decide,
    is_holiday,
)
from services.scheduler.domain.packs import load_packs
from shared.events import CONNECTED, RIGHT_PARTY

PACKS = load_packs()
CN, US = PACKS["CN"], PACKS["US"]
ADDRESSES = {"sms": "ph1", "voice": "ph1", "email": "em1", "letter": "po1", "field_visit": "po1"}


def party(country: str = "CN", tz: str | None = "Asia/Shanghai", **kw: object) -> Party:
    fields: dict[str, object] = {"addresses": ADDRESSES} | kw
    return Party("C1", "A1", country, tz, **fields)  # type: ignore[arg-type]


def at(tz: str, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), ZoneInfo(tz)).astimezone(UTC)


def ask(
    pack_party: Party, channel: str, now: datetime, history: list[Contact] | None = None
) -> Allowed | Forbidden:
    pack = PACKS[pack_party.country or "CN"]
    return decide(pack, pack_party, history or [], Proposal(channel, now), now)  # type: ignore[arg-type]


WEEKDAY = date(2026, 12, 2)  # a Wednesday, no holiday in CN or US
SH, NY = "Asia/Shanghai", "America/New_York"


# --- one example per rule ----------------------------------------------------------------------


def test_cn_window_missed_payment_at_23_local_is_contacted_from_08_next_morning() -> None:
    verdict = ask(party(), "sms", at(SH, WEEKDAY, 23))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY + timedelta(days=1), 8)
    assert verdict.not_after == at(SH, WEEKDAY + timedelta(days=1), 22)
    assert "CN.window.local-hours" in verdict.deferred_by


def test_us_window_closes_at_21_local() -> None:
    verdict = ask(party("US", NY), "voice", at(NY, WEEKDAY, 12))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(NY, WEEKDAY, 12)
    assert verdict.not_after == at(NY, WEEKDAY, 21)


def test_letters_are_not_bound_to_local_hours() -> None:
    verdict = ask(party(), "letter", at(SH, WEEKDAY, 23, 30))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY, 23, 30)


def test_cn_fourth_connected_call_in_a_day_waits_for_the_next_day() -> None:
    calls = [Contact("A1", "voice", at(SH, WEEKDAY, 9 + i), "ph1", "right_party") for i in range(3)]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 15), calls)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY + timedelta(days=1), 8)
    assert "CN.voice.connected-per-day" in verdict.deferred_by


def test_cn_seventh_attempt_to_one_unanswered_number_in_a_day_is_deferred() -> None:
    calls = [
        Contact("A1", "voice", at(SH, WEEKDAY, 8, 10 * i), "ph1", "no_answer") for i in range(6)
    ]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 12), calls)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before.astimezone(ZoneInfo(SH)).date() == WEEKDAY + timedelta(days=1)
    assert "CN.voice.attempts-per-number-per-day" in verdict.deferred_by


def test_cn_attempts_to_an_old_number_do_not_count_against_a_new_one() -> None:
    calls = [
        Contact("A1", "voice", at(SH, WEEKDAY, 8, 5 * i), "old", "no_answer") for i in range(6)
    ]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 12), calls)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY, 12)


def test_us_eighth_call_in_seven_days_is_deferred_past_the_seven_day_window() -> None:
    start = WEEKDAY - timedelta(days=6)
    calls = [
        Contact("A1", "voice", at(NY, start + timedelta(days=i), 10), "ph1", "no_answer")
        for i in range(7)
    ]
    verdict = ask(party("US", NY), "voice", at(NY, WEEKDAY, 15), calls)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(NY, WEEKDAY + timedelta(days=1), 8)
    assert "US.voice.7-in-7" in verdict.deferred_by


def test_us_calls_about_another_account_do_not_count_towards_this_ones_seven() -> None:
    calls = [Contact("A2", "voice", at(NY, WEEKDAY, 8 + i), "ph1", "no_answer") for i in range(7)]
    verdict = ask(party("US", NY), "voice", at(NY, WEEKDAY, 16), calls)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(NY, WEEKDAY, 16)


def test_us_no_call_in_the_seven_days_after_a_conversation_counting_its_day_as_day_one() -> None:
    talk = Contact("A1", "voice", at(NY, WEEKDAY, 20), "ph1", "right_party")
    verdict = ask(party("US", NY), "voice", at(NY, WEEKDAY + timedelta(days=1), 9), [talk])
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(NY, WEEKDAY + timedelta(days=7), 8)
    assert "US.voice.after-conversation" in verdict.deferred_by


def test_us_conversation_does_not_hold_back_an_sms() -> None:
    talk = Contact("A1", "voice", at(NY, WEEKDAY, 10), "ph1", "right_party")
    verdict = ask(party("US", NY), "sms", at(NY, WEEKDAY, 11), [talk])
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(NY, WEEKDAY, 11)


def test_cn_national_day_holiday_moves_the_contact_past_it() -> None:
    verdict = ask(party(), "sms", at(SH, date(2026, 10, 1), 10))
    assert isinstance(verdict, Allowed)
    day = verdict.not_before.astimezone(ZoneInfo(SH)).date()
    assert day > date(2026, 10, 1)
    assert not is_holiday("CN", day)
    assert "CN.holiday" in verdict.deferred_by


def test_us_christmas_day_has_no_contact_even_by_letter() -> None:
    verdict = ask(party("US", NY), "letter", at(NY, date(2026, 12, 25), 10))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before.astimezone(ZoneInfo(NY)).date() == date(2026, 12, 26)
    assert "US.holiday" in verdict.deferred_by


def test_opt_out_stops_that_channel_and_address_only() -> None:
    optout = party(opted_out=frozenset({("sms", "ph1")}))
    sms = ask(optout, "sms", at(SH, WEEKDAY, 10))
    assert isinstance(sms, Forbidden)
    assert sms.rules == ("CN.stop.opt-out",)
    assert isinstance(ask(optout, "voice", at(SH, WEEKDAY, 10)), Allowed)
    assert isinstance(ask(optout, "email", at(SH, WEEKDAY, 10)), Allowed)
    new_number = party(opted_out=frozenset({("sms", "ph0")}))
    assert isinstance(ask(new_number, "sms", at(SH, WEEKDAY, 10)), Allowed)


def test_each_stop_rule_forbids_every_channel_with_its_rule_id() -> None:
    cases = {
        "US.stop.cease": party("US", NY, ceased=True),
        "US.stop.dispute": party("US", NY, dispute_open=True),
        "US.stop.bankruptcy": party("US", NY, flags=frozenset({"bankruptcy"})),
        "US.stop.deceased": party("US", NY, flags=frozenset({"deceased"})),
        "US.stop.legal-hold": party("US", NY, flags=frozenset({"legal_hold"})),
    }
    for rule, who in cases.items():
        for channel in ("sms", "email", "voice", "letter", "field_visit"):
            verdict = ask(who, channel, at(NY, WEEKDAY, 10))
            assert isinstance(verdict, Forbidden), (rule, channel)
            assert rule in verdict.rules, (rule, channel)
            assert verdict.kind == "stop"


def test_third_parties_are_never_contacted() -> None:
    now = at(SH, WEEKDAY, 10)
    verdict = decide(CN, party(), [], Proposal("voice", now, third_party=True), now)
    assert isinstance(verdict, Forbidden)
    assert "CN.stop.third-party" in verdict.rules


def test_customer_with_no_usable_channel_is_stopped_not_crashed() -> None:
    verdict = ask(party(addresses={}), "sms", at(SH, WEEKDAY, 10))
    assert isinstance(verdict, Forbidden)
    assert verdict.rules == ("CN.channel.usable",)


def test_kept_plan_stops_and_pending_promise_holds_contact_until_the_day_after() -> None:
    plan = ask(party(plan_kept=True), "sms", at(SH, WEEKDAY, 10))
    assert isinstance(plan, Forbidden)
    assert plan.kind == "pause"
    assert plan.rules == ("CN.pause.plan-kept",)
    promise = ask(party(promise_due=WEEKDAY + timedelta(days=3)), "sms", at(SH, WEEKDAY, 10))
    assert isinstance(promise, Allowed)
    assert promise.not_before == at(SH, WEEKDAY + timedelta(days=4), 8)
    assert "CN.pause.promise-pending" in promise.deferred_by
    lapsed = ask(party(promise_due=WEEKDAY - timedelta(days=1)), "sms", at(SH, WEEKDAY, 10))
    assert isinstance(lapsed, Allowed)


def test_customer_without_timezone_falls_back_to_the_packs_default_and_says_so() -> None:
    verdict = ask(party(tz=None), "sms", at(SH, WEEKDAY, 7))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY, 8)
    assert any("default" in note for note in verdict.notes)


# --- properties --------------------------------------------------------------------------------

ZONES = [
    "Pacific/Kiritimati",  # UTC+14
    "Etc/GMT+12",  # UTC-12
    "America/New_York",  # DST
    "Europe/London",  # DST
    "Australia/Lord_Howe",  # half-hour DST
    "Asia/Shanghai",
    "Asia/Kathmandu",  # +05:45
]
# hypothesis takes naive bounds and attaches the time zone itself
NAIVE_FIRST, NAIVE_LAST = datetime(2026, 1, 1), datetime(2027, 12, 31)  # noqa: DTZ001
instants = st.datetimes(min_value=NAIVE_FIRST, max_value=NAIVE_LAST, timezones=st.just(UTC))
outcomes = st.sampled_from([None, "no_answer", *sorted(CONNECTED | RIGHT_PARTY)])


@dataclass(frozen=True)
class Situation:
    who: Party
    history: list[Contact]
    channel: str
    now: datetime
    requested: bool  # a callback the customer asked for


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    country = draw(st.sampled_from(["CN", "US"]))
    now = draw(instants)
    paused = draw(st.booleans()) and draw(st.booleans())
    who = Party(
        "C1",
        "A1",
        country,
        draw(st.sampled_from([*ZONES, None])),
        addresses=ADDRESSES,
        opted_out=draw(st.frozensets(st.sampled_from([("sms", "ph1"), ("email", "em1")]))),
        ceased=draw(st.booleans()) and draw(st.booleans()),
        dispute_open=draw(st.booleans()) and draw(st.booleans()),
        flags=draw(
            st.frozensets(
                st.sampled_from(["bankruptcy", "deceased", "legal_hold", "hardship"]), max_size=1
            )
        ),
        plan_kept=draw(st.booleans()) and draw(st.booleans()),
        hardship_until=now + timedelta(minutes=draw(st.integers(-600, 60 * 24 * 20)))
        if paused
        else None,
    )
    # This customer's contacts and another customer's (C2) at the same or another number: a
    # household's shared phone.
    history = [
        Contact(
            draw(st.sampled_from(["A1", "A2"])),
            draw(st.sampled_from(["voice", "voice", "sms", "email"])),
            now - timedelta(minutes=draw(st.integers(-240, 60 * 24 * 10))),
            draw(st.sampled_from(["ph1", "ph2"])),
            draw(outcomes),
            draw(st.sampled_from([None, "C1", "C2"])),
        )
        for _ in range(draw(st.integers(0, 25)))
    ]
    channel = draw(st.sampled_from(["sms", "email", "voice", "letter", "field_visit"]))
    return Situation(who, history, channel, now, channel == "voice" and draw(st.booleans()))


@settings(max_examples=500, deadline=None)
@given(situations())
def test_no_allowed_window_breaks_any_rule_of_its_pack(situation: Situation) -> None:
    who, history, channel, now = situation.who, situation.history, situation.channel, situation.now
    pack = PACKS[who.country or "CN"]
    proposal = Proposal(channel, now, requested=situation.requested)  # type: ignore[arg-type]
    verdict = decide(pack, who, history, proposal, now)
    stopped = (
        who.ceased
        or who.dispute_open
        or who.plan_kept
        or bool(who.flags & {"bankruptcy", "deceased", "legal_hold"})
        or (channel, ADDRESSES[channel]) in who.opted_out
    )
    if stopped:  # nothing is requested after a stop rule
        assert isinstance(verdict, Forbidden)
        return
    if not isinstance(verdict, Allowed):
        return
    zone = ZoneInfo(who.timezone or pack.default_timezone)
    start, end = verdict.not_before.astimezone(zone), verdict.not_after.astimezone(zone)
    assert now <= verdict.not_before < verdict.not_after
    assert start.date() == (end - timedelta(microseconds=1)).date()  # one local day
    day = start.date()
    assert not is_holiday(pack.country, day)
    if who.hardship_until is not None:  # no contact inside a hardship pause
        assert verdict.not_before >= who.hardship_until
    if channel != "letter":  # a callback too: never outside the window
        hours = {"CN": (time(8), time(22)), "US": (time(8), time(21))}[pack.country]
        assert hours[0] <= start.time()
        assert end.time() <= hours[1]
        assert end.time() != time(0)
    mine = [c for c in history if c.customer_id in (None, "C1")]
    for kind, gap in (({"voice"}, 120), ({"sms", "email"}, 60)):
        if channel in kind:  # the spacing gap is never broken, either way
            assert all(
                abs(c.at - verdict.not_before) >= timedelta(minutes=gap)
                for c in mine
                if c.channel in kind
            )
    if channel != "voice":
        return
    calls = [c for c in history if c.channel == "voice"]
    if pack.country == "CN":
        same_day = [c for c in calls if c.at.astimezone(zone).date() == day]
        mine_today = [c for c in same_day if c.customer_id in (None, "C1")]
        assert sum(c.outcome in CONNECTED or c.outcome is None for c in mine_today) < 3
        # every attempt to the number counts, whichever customer it was for
        assert sum(c.address == "ph1" for c in same_day) < 6
    else:
        own = [c for c in calls if c.account_id == "A1" and c.customer_id in (None, "C1")]
        week = [c for c in own if day - timedelta(days=6) <= c.at.astimezone(zone).date() <= day]
        assert len(week) < 7  # this call would be at most the 7th in any 7 days
        if not situation.requested:
            talks = [c.at.astimezone(zone).date() for c in own if c.outcome in RIGHT_PARTY]
            assert all(day >= talk + timedelta(days=7) for talk in talks)


def test_cn_household_sharing_a_number_gets_at_most_six_attempts_on_it_a_day() -> None:
    theirs = [
        Contact("B1", "voice", at(SH, WEEKDAY, 8, 5 * i), "ph1", "no_answer", "C2")
        for i in range(6)
    ]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 12), theirs)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before.astimezone(ZoneInfo(SH)).date() == WEEKDAY + timedelta(days=1)
    assert "CN.voice.attempts-per-number-per-day" in verdict.deferred_by


def test_another_customers_conversations_do_not_count_against_this_ones_connected_calls() -> None:
    theirs = [
        Contact("B1", "voice", at(SH, WEEKDAY, 8 + i), "ph9", "right_party", "C2") for i in range(3)
    ]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 12), theirs)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY, 12)


def test_a_second_call_at_the_same_instant_waits_for_the_spacing_gap() -> None:
    first = [Contact("A1", "voice", at(SH, WEEKDAY, 8), "ph1")]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 8), first)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY, 10)
    assert "CN.spacing.calls" in verdict.deferred_by


def test_an_email_after_an_sms_waits_an_hour_but_a_call_does_not() -> None:
    sms = [Contact("A1", "sms", at(NY, WEEKDAY, 9), "ph1")]
    email = ask(party("US", NY), "email", at(NY, WEEKDAY, 9), sms)
    call = ask(party("US", NY), "voice", at(NY, WEEKDAY, 9), sms)
    assert isinstance(email, Allowed)
    assert isinstance(call, Allowed)
    assert email.not_before == at(NY, WEEKDAY, 10)
    assert "US.spacing.messages" in email.deferred_by
    assert call.not_before == at(NY, WEEKDAY, 9)


def test_spacing_late_in_the_day_moves_the_contact_to_the_next_morning() -> None:
    late = [Contact("A1", "voice", at(SH, WEEKDAY, 21), "ph1")]
    verdict = ask(party(), "voice", at(SH, WEEKDAY, 21, 30), late)
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY + timedelta(days=1), 8)


def test_no_contact_inside_a_hardship_pause_and_the_rule_is_cited() -> None:
    until = at(SH, WEEKDAY + timedelta(days=14), 0)
    verdict = ask(party(hardship_until=until), "sms", at(SH, WEEKDAY, 10))
    assert isinstance(verdict, Allowed)
    assert verdict.not_before == at(SH, WEEKDAY + timedelta(days=14), 8)
    assert "CN.pause.hardship" in verdict.deferred_by


def test_us_callback_the_customer_asked_for_is_not_held_by_the_quiet_days() -> None:
    talk = [Contact("A1", "voice", at(NY, WEEKDAY, 10), "ph1", "callback")]
    asked = at(NY, WEEKDAY + timedelta(days=1), 19, 30)
    who = party("US", NY)
    callback = decide(US, who, talk, Proposal("voice", asked, requested=True), asked)
    collection = decide(US, who, talk, Proposal("voice", asked), asked)
    assert isinstance(callback, Allowed)
    assert isinstance(collection, Allowed)
    assert callback.not_before == asked
    assert collection.not_before.date() >= WEEKDAY + timedelta(days=7)


# --- the compliance state a collector reads ---------------------------------------------------


def test_the_state_counts_todays_calls_and_names_when_the_window_closes() -> None:
    from services.scheduler.domain.compliance import state

    now = at(SH, WEEKDAY, 15)
    history = [
        Contact("A1", "voice", at(SH, WEEKDAY, 9), "ph1", "right_party"),
        Contact("A1", "voice", at(SH, WEEKDAY, 12), "ph1", "no_answer"),
        Contact("A1", "voice", at(SH, WEEKDAY - timedelta(days=1), 12), "ph1", "right_party"),
    ]
    found = state(CN, party(), history, "voice", now)
    words = {line.rule: line.text for line in found.lines}
    assert words["CN.voice.connected-per-day"] == (
        "1 of 3 connected calls to this customer used today"
    )
    assert words["CN.voice.attempts-per-number-per-day"] == (
        "2 of 6 call attempts to this number used today"
    )
    assert words["CN.window.local-hours"] == "window open; closes 22:00 local"
    assert words["CN.stop.third-party"] == "contact the debtor only; tell no third party"
    assert found.allowed_now
    assert found.window_closes_at == at(SH, WEEKDAY, 22)


def test_the_state_says_why_a_call_is_not_allowed_now_and_when_it_is() -> None:
    from services.scheduler.domain.compliance import state

    late = state(CN, party(), [], "voice", at(SH, WEEKDAY, 22, 30))
    assert not late.allowed_now
    assert "window closed; opens 08:00 local" in [line.text for line in late.lines]
    assert late.next_allowed_at == at(SH, WEEKDAY + timedelta(days=1), 8)
    spaced = state(
        CN,
        party(),
        [Contact("A1", "voice", at(SH, WEEKDAY, 10), "ph1", "no_answer")],
        "voice",
        at(SH, WEEKDAY, 11),
    )
    assert not spaced.allowed_now
    assert spaced.blocked_by == ("CN.spacing.calls",)
    assert spaced.next_allowed_at == at(SH, WEEKDAY, 12)
    us = state(US, party("US", NY), [], "voice", at(NY, WEEKDAY, 10))
    assert "0 of 7 call attempts in 7 days" in [line.text for line in us.lines]
    disputed = state(CN, party(dispute_open=True), [], "voice", at(SH, WEEKDAY, 10))
    assert not disputed.allowed_now
    assert disputed.blocked_by == ("CN.stop.dispute",)
