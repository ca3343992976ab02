"""The compliance engine: may this contact happen, and if so, when?

A pure function of (policy pack, the customer's standing, contact history, the proposed contact,
now). It returns either the first allowed window at or after the proposal's earliest time, or the
ids of the rules that forbid the contact. Packs are data (``services/scheduler/packs/*.yaml``);
each rule has a stable id that travels into suppression reasons and the audit trail.

Rules come in three kinds:
- *stop* rules forbid the contact outright (opt-out, cease, dispute, bankruptcy, ...);
- *pause* rules forbid it while a kept plan or a pending promise lasts (the timer is cancelled
  and re-planned when the pause ends);
- *timing* rules (local hours, holidays, call caps, quiet days after a conversation) only move
  the contact later; the rules that moved it are reported as ``deferred_by``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import CONNECTED, RIGHT_PARTY

Channel = Literal["sms", "email", "voice", "letter", "field_visit"]
CHANNELS: tuple[Channel, ...] = ("sms", "email", "voice", "letter", "field_visit")


HORIZON_DAYS = 45  # how far ahead a window is looked for before the contact is given up

# --- the pack, as data ---------------------------------------------------------------------------


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[str, Field(pattern=r"^[A-Z]{2}\.[a-z0-9.\-]+$")]
    source: str = ""  # the law or policy the rule rests on


class LocalHours(_Rule):
    kind: Literal["local_hours"]
    start: time
    end: time
    exempt_channels: tuple[Channel, ...] = ()


class PublicHolidays(_Rule):
    kind: Literal["public_holidays"]
    calendar: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class DailyCap(_Rule):
    """At most ``max`` calls counted as ``counts`` per local day, per customer or per number."""

    kind: Literal["daily_cap"]
    channel: Channel = "voice"
    counts: Literal["attempts", "connected"]
    per: Literal["customer", "address"]
    max: Annotated[int, Field(ge=0)]


class RollingCap(_Rule):
    """At most ``max`` attempts per account in any ``days`` consecutive local days."""

    kind: Literal["rolling_cap"]
    channel: Channel = "voice"
    max: Annotated[int, Field(ge=0)]
    days: Annotated[int, Field(ge=1)]


class QuietAfterConversation(_Rule):
    """No call to an account within ``days`` after a right-party conversation about it; with
    ``except_requested``, a call the customer asked for (a callback) is not held back by it."""

    kind: Literal["quiet_after_conversation"]
    channel: Channel = "voice"
    days: Annotated[int, Field(ge=1)]
    except_requested: bool = False


class Spacing(_Rule):
    """At most one contact to a customer on ``channels`` (one kind: calls, or electronic
    messages) in any ``minutes``: contacts that pile up are spread, never dropped."""

    kind: Literal["spacing"]
    channels: Annotated[tuple[Channel, ...], Field(min_length=1)]
    minutes: Annotated[int, Field(ge=1, le=24 * 60)]


class HardshipPause(_Rule):
    """A customer in hardship is not contacted for ``days`` (the breather) after saying so, or
    until the date they gave, whichever is later; then the hardship treatment starts."""

    kind: Literal["hardship_pause"]
    days: Annotated[int, Field(ge=1, le=180)]


StopReason = Literal[
    "opt_out", "cease", "dispute", "bankruptcy", "deceased", "legal_hold", "third_party"
]


class Stop(_Rule):
    kind: Literal["stop"]
    when: StopReason


class Pause(_Rule):
    kind: Literal["pause"]
    when: Literal["plan_kept", "promise_pending"]


SettleReason = Literal["nothing_overdue", "part_payment", "restart", "due_passed"]


class Settle(_Rule):
    """What ends or holds a treatment's pending steps outside the contact rules: nothing is
    overdue any more, a part payment earns a breather of ``days``, or a new treatment replaces
    the one in force. Named here so that every cancellation and deferral cites a rule id."""

    kind: Literal["settle"]
    when: SettleReason
    days: Annotated[int, Field(ge=1, le=60)] | None = None


class UsableChannel(_Rule):
    """The customer must have an address for the channel (a phone, an email, a postal address)."""

    kind: Literal["usable_channel"]


Rule = Annotated[
    LocalHours
    | PublicHolidays
    | DailyCap
    | RollingCap
    | QuietAfterConversation
    | Spacing
    | HardshipPause
    | Stop
    | Pause
    | Settle
    | UsableChannel,
    Field(discriminator="kind"),
]


class Pack(BaseModel):
    """One country's rules. ``default_timezone`` stands in for a customer without one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    version: Annotated[int, Field(ge=1)]
    default_timezone: str
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _settles_and_pauses_are_named(self) -> Pack:
        for when in ("nothing_overdue", "part_payment", "restart", "due_passed"):
            self.settle(when)
        for pause in ("plan_kept", "promise_pending"):
            self.pause(pause)
        self.hardship()
        return self

    def hardship(self) -> HardshipPause:
        found = next((r for r in self.rules if isinstance(r, HardshipPause)), None)
        if found is None:
            raise ValueError(f"the {self.country} pack has no hardship pause")
        return found

    def settle(self, when: SettleReason) -> Settle:
        found = next((r for r in self.rules if isinstance(r, Settle) and r.when == when), None)
        if found is None:
            raise ValueError(f"the {self.country} pack has no settle rule for {when}")
        return found

    def pause(self, when: Literal["plan_kept", "promise_pending"]) -> Pause:
        found = next((r for r in self.rules if isinstance(r, Pause) and r.when == when), None)
        if found is None:
            raise ValueError(f"the {self.country} pack has no pause rule for {when}")
        return found

    def lookback_days(self) -> int:
        """How many days of contact history the pack's rules read: its longest window, plus a
        day because a local day spans up to 26 hours of UTC."""
        windows = [1]  # daily caps look at today
        windows += [
            r.days for r in self.rules if isinstance(r, RollingCap | QuietAfterConversation)
        ]
        return max(windows) + 1


def history_days(packs: Iterable[Pack]) -> int:
    """The contact history the scheduler loads: enough for the longest rule of any pack, so a
    new rule with a longer window cannot silently outgrow it."""
    return max(pack.lookback_days() for pack in packs)


# --- the facts the engine decides on ---------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """The customer and account as the scheduler knows them. Addresses are fingerprints."""

    customer_id: str
    account_id: str
    country: str | None
    timezone: str | None
    addresses: dict[str, str] = field(default_factory=dict)  # channel -> address fingerprint
    opted_out: frozenset[tuple[str, str]] = frozenset()  # (channel, fingerprint)
    ceased: bool = False
    dispute_open: bool = False
    flags: frozenset[str] = frozenset()
    plan_kept: bool = False
    promise_due: date | None = None  # a pending promise pauses contact until the day after
    hardship_until: datetime | None = None  # no contact before this instant (hardship pause)


@dataclass(frozen=True)
class Contact:
    """A past (or requested and not yet reported) contact with this customer, or with another
    customer at one of this customer's addresses (a household's shared number)."""

    account_id: str
    channel: str
    at: datetime
    address: str | None = None
    outcome: str | None = None  # None: requested, not reported yet (counted as an attempt)
    customer_id: str | None = None  # None: this customer's
    contact_id: str | None = None


def _mine(contact: Contact, party: Party) -> bool:
    return contact.customer_id is None or contact.customer_id == party.customer_id


@dataclass(frozen=True)
class Proposal:
    channel: Channel
    earliest: datetime
    third_party: bool = False
    requested: bool = False  # the customer asked for this call at ``earliest`` (a callback)


@dataclass(frozen=True)
class Allowed:
    not_before: datetime
    not_after: datetime
    deferred_by: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    allowed = True


@dataclass(frozen=True)
class Forbidden:
    rules: tuple[str, ...]
    kind: Literal["stop", "pause", "no_window"]
    notes: tuple[str, ...] = ()

    allowed = False


Verdict = Allowed | Forbidden

_STOP_FLAGS = {"bankruptcy", "deceased", "legal_hold"}


def decide(
    pack: Pack, party: Party, history: Sequence[Contact], proposal: Proposal, now: datetime
) -> Verdict:
    """The first window in which ``proposal`` is lawful under ``pack``, or why it never is."""
    notes: list[str] = []
    zone = _zone(party.timezone, pack, notes)
    address = party.addresses.get(proposal.channel)

    stops = [
        rule.id
        for rule in pack.rules
        if isinstance(rule, Stop) and _stops(rule.when, party, proposal, address)
    ]
    if any(isinstance(rule, UsableChannel) for rule in pack.rules) and not address:
        stops += [rule.id for rule in pack.rules if isinstance(rule, UsableChannel)]
    if stops:
        return Forbidden(tuple(stops), "stop", tuple(notes))
    pauses = [
        rule.id
        for rule in pack.rules
        if isinstance(rule, Pause) and rule.when == "plan_kept" and party.plan_kept
    ]
    if pauses:
        return Forbidden(tuple(pauses), "pause", tuple(notes))

    earliest = max(proposal.earliest, now)
    deferred: list[str] = []
    for rule in pack.rules:
        # A pending promise holds contact until the day after its date (in the customer's
        # calendar); then the engine looks again, and a promise kept by then has ended it.
        if isinstance(rule, Pause) and rule.when == "promise_pending" and party.promise_due:
            resume = datetime.combine(party.promise_due + timedelta(days=1), time(0), zone)
            if resume > earliest:
                earliest = resume
                deferred.append(rule.id)
        until = party.hardship_until
        if isinstance(rule, HardshipPause) and until is not None and until > earliest:
            earliest = until
            deferred.append(rule.id)
    first_day = earliest.astimezone(zone).date()
    for offset in range(HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        window = _window_on(pack, day, zone, proposal, earliest, history, party, deferred)
        if window is not None:
            start, end = window
            return Allowed(
                start.astimezone(UTC),
                end.astimezone(UTC),
                tuple(dict.fromkeys(deferred)),
                tuple(notes),
            )
    return Forbidden(tuple(dict.fromkeys(deferred)) or ("horizon",), "no_window", tuple(notes))


def _stops(when: StopReason, party: Party, proposal: Proposal, address: str | None) -> bool:
    if when == "opt_out":
        return address is not None and (proposal.channel, address) in party.opted_out
    if when == "cease":
        return party.ceased
    if when == "dispute":
        return party.dispute_open
    if when == "third_party":
        return proposal.third_party
    return when in _STOP_FLAGS and when in party.flags


def _zone(timezone: str | None, pack: Pack, notes: list[str]) -> ZoneInfo:
    if timezone:
        try:
            return ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            notes.append("unknown timezone: used the pack's default")
    else:
        notes.append("no timezone: used the pack's default")
    return ZoneInfo(pack.default_timezone)


def _window_on(
    pack: Pack,
    day: date,
    zone: ZoneInfo,
    proposal: Proposal,
    earliest: datetime,
    history: Sequence[Contact],
    party: Party,
    deferred: list[str],
) -> tuple[datetime, datetime] | None:
    """The allowed part of local ``day`` at or after ``earliest``, or None (noting why)."""
    channel = proposal.channel
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    for rule in pack.rules:
        if isinstance(rule, PublicHolidays) and day in _calendar(rule.calendar, day.year):
            deferred.append(rule.id)
            return None
        if isinstance(rule, LocalHours) and channel not in rule.exempt_channels:
            start = max(start, datetime.combine(day, rule.start, zone))
            end = min(end, datetime.combine(day, rule.end, zone))
    if earliest >= end:
        if earliest.astimezone(zone).date() == day:
            deferred += [r.id for r in pack.rules if isinstance(r, LocalHours)]
        return None
    if earliest > start:
        start = earliest
    elif earliest < start and earliest.astimezone(zone).date() == day:
        deferred += [
            r.id
            for r in pack.rules
            if isinstance(r, LocalHours) and channel not in r.exempt_channels
        ]
    calls = [c for c in history if c.channel == channel]
    mine = [c for c in calls if _mine(c, party)]
    for rule in pack.rules:
        if isinstance(rule, DailyCap | RollingCap) and rule.channel == channel:
            if _used(rule, calls, mine, party, zone, day) >= rule.max:
                deferred.append(rule.id)
                return None
        elif isinstance(rule, QuietAfterConversation) and rule.channel == channel:
            if proposal.requested and rule.except_requested:
                continue
            talks = [
                c.at for c in mine if c.account_id == party.account_id and c.outcome in RIGHT_PARTY
            ]
            if talks:
                # The conversation's own (local) day is day 1 of the quiet period.
                last_talk = max(talks).astimezone(zone).date()
                quiet_until = datetime.combine(last_talk + timedelta(days=rule.days), time(0), zone)
                if quiet_until >= end:
                    deferred.append(rule.id)
                    return None
                if quiet_until > start:
                    deferred.append(rule.id)
                    start = quiet_until
    for rule in pack.rules:
        if isinstance(rule, Spacing) and channel in rule.channels:
            # The gap runs both ways: a contact already placed later than ``start`` (a
            # callback planned ahead) keeps this one from landing just before it.
            gap = timedelta(minutes=rule.minutes)
            near = sorted(c.at for c in history if _mine(c, party) and c.channel in rule.channels)
            moved = True
            while moved:
                moved = False
                for at in near:
                    if at - gap < start < at + gap:
                        start = at + gap
                        moved = True
                        if rule.id not in deferred[-1:]:
                            deferred.append(rule.id)
            if start >= end:
                return None
    return start, end


def _used(
    rule: DailyCap | RollingCap,
    calls: Sequence[Contact],
    mine: Sequence[Contact],
    party: Party,
    zone: ZoneInfo,
    day: date,
) -> int:
    """How much of a cap the contacts use on local ``day``."""
    if isinstance(rule, DailyCap):
        # per customer: this customer's; per address: every attempt to that address, whichever
        # customer it was for (a household shares a number)
        return sum(
            1
            for c in (mine if rule.per == "customer" else calls)
            if c.at.astimezone(zone).date() == day
            # a call requested but not reported yet may yet connect: count it
            and (rule.counts == "attempts" or c.outcome in CONNECTED or c.outcome is None)
            and (rule.per == "customer" or c.address == party.addresses.get(rule.channel))
        )
    since = day - timedelta(days=rule.days - 1)
    return sum(
        1
        for c in mine
        if c.account_id == party.account_id and since <= c.at.astimezone(zone).date() <= day
    )


@lru_cache(maxsize=64)
def _calendar(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year))


def is_holiday(country: str, day: date) -> bool:
    return day in _calendar(country, day.year)


# --- what is still allowed today, in words (the collector desk shows it) ----------------------


@dataclass(frozen=True)
class StateLine:
    rule: str
    text: str


@dataclass(frozen=True)
class State:
    """A channel's compliance state for one account at ``now``: whether a contact may be made
    now, when the window closes (or next opens), and each rule that bears on it in words."""

    channel: str
    allowed_now: bool
    window_closes_at: datetime | None
    next_allowed_at: datetime | None
    blocked_by: tuple[str, ...]
    lines: tuple[StateLine, ...]


def state(
    pack: Pack, party: Party, history: Sequence[Contact], channel: Channel, now: datetime
) -> State:
    """Read-only: the same engine as :func:`decide`, asked about ``now``, plus the counts of
    each cap so far today, as a collector needs them ("2 of 3 connected calls used today")."""
    notes: list[str] = []
    zone = _zone(party.timezone, pack, notes)
    local = now.astimezone(zone)
    today = local.date()
    verdict = decide(pack, party, history, Proposal(channel, now), now)
    lines: list[StateLine] = []
    calls = [c for c in history if c.channel == channel]
    mine = [c for c in calls if _mine(c, party)]
    for rule in pack.rules:
        if isinstance(rule, DailyCap) and rule.channel == channel:
            used = _used(rule, calls, mine, party, zone, today)
            what = "connected calls" if rule.counts == "connected" else "call attempts"
            where = "to this customer" if rule.per == "customer" else "to this number"
            lines.append(StateLine(rule.id, f"{used} of {rule.max} {what} {where} used today"))
        elif isinstance(rule, RollingCap) and rule.channel == channel:
            used = _used(rule, calls, mine, party, zone, today)
            lines.append(
                StateLine(rule.id, f"{used} of {rule.max} call attempts in {rule.days} days")
            )
        elif isinstance(rule, LocalHours) and channel not in rule.exempt_channels:
            start, end = rule.start.strftime("%H:%M"), rule.end.strftime("%H:%M")
            if rule.start <= local.time() < rule.end:
                lines.append(StateLine(rule.id, f"window open; closes {end} local"))
            else:
                lines.append(StateLine(rule.id, f"window closed; opens {start} local"))
        elif isinstance(rule, Stop) and rule.when == "third_party":
            lines.append(StateLine(rule.id, "contact the debtor only; tell no third party"))
    closes = None
    if isinstance(verdict, Allowed) and verdict.not_before <= now:
        closes = verdict.not_after
        return State(channel, True, closes, now, (), tuple(lines))
    if isinstance(verdict, Allowed):
        return State(channel, False, None, verdict.not_before, verdict.deferred_by, tuple(lines))
    return State(channel, False, None, None, verdict.rules, tuple(lines))
