"""The simulated book and its customers' behaviour, as plain data and functions (no I/O).

Every draw comes from a :class:`random.Random` seeded by the run's seed and *what* is being
decided (a customer, a contact, a promise), never by the order things happen in, so a run with
the same seed makes the same choices however the system interleaves its work.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field

PARAMS = Path(__file__).resolve().parent / "params.yaml"
CENT = Decimal("0.01")

Segment = Literal["prime", "near_prime", "subprime"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Country(Strict):
    weight: float = Field(ge=0)
    currency: str
    locale: str
    timezones: dict[str, float]
    phone_prefix: str
    email_domain: str


class Product(Strict):
    weight: float = Field(ge=0)
    principal: tuple[int, int]
    installments: list[int]


class Score(Strict):
    mean: float
    sd: float
    min: int
    max: int


class PayAfterContact(Strict):
    channel: dict[str, float]
    segment: dict[Segment, float]
    hours: list[tuple[int, int, float]]
    within_days: tuple[int, int]


class Voice(Strict):
    answer: dict[Segment, float]
    wrong_party: float
    promise: float
    plan_if_offered: float
    dispute: float
    refuse: float


class FieldVisit(Strict):
    answer: float
    promise: float
    dispute: float


class Reply(Strict):
    accept_offer: float
    stop: float
    dispute: float


class Promise(Strict):
    days: tuple[int, int]
    keep: dict[Segment, float]


class Plan(Strict):
    keep_installment: dict[Segment, float]


class Humane(Strict):
    reminder_rescue: float
    hardship: dict[Segment, float]
    hardship_accept: float
    callback_ask: float
    callback_answer: float
    callback_times: list[str]
    page: float


class DeskPeople(Strict):
    """Who works the desk's queues in the campaign (the demo logins ``make up`` creates), and
    the team lead who approves plans beyond a collector's authority."""

    collectors: list[tuple[str, str]] = []  # (username, password)
    lead: tuple[str, str] | None = None


class ModelsPlan(Strict):
    """When the campaign fits a propensity model on its own history and runs it as a
    challenger variant: after ``fit_after_days``, with ``weight`` percent of the champion's
    traffic (0: never)."""

    fit_after_days: int = Field(21, ge=1)
    challenger: str = "fitted-model"
    weight: int = Field(20, ge=0, le=100)


class Params(Strict):
    start: datetime
    days: int = Field(ge=1, le=400)
    step_hours: list[float] = Field(min_length=1)
    countries: dict[str, Country]
    has_email: float
    has_postal_address: float
    credit_score: Score
    segments: dict[Segment, int]
    products: dict[str, Product]
    months_on_book: tuple[int, int]
    behind_at_start: dict[Segment, float]
    behind_months: dict[int, float]
    miss_in_campaign: dict[Segment, float]
    silent: float
    pay_after_contact: PayAfterContact
    voice: Voice
    field_visit: FieldVisit
    reply: Reply
    promise: Promise
    plan: Plan
    bounce: dict[str, float]
    letter_returned: float
    miss_again: float
    humane: Humane
    desk: DeskPeople = DeskPeople()
    models: ModelsPlan = ModelsPlan()

    @classmethod
    def load(cls, path: Path = PARAMS) -> Params:
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def steps(self) -> list[datetime]:
        """Every clock instant of the campaign, in order."""
        first = self.start.astimezone(UTC)
        midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        for day in range(self.days):
            for hour in sorted(self.step_hours):
                at = midnight + timedelta(days=day, hours=hour)
                if at >= first:
                    out.append(at)
        return out


BEFORE_MIDNIGHT = timedelta(seconds=1)


def midnight_moves(zones: Iterable[str], after: datetime, before: datetime) -> list[datetime]:
    """The clock moves to make between two steps so that each zone's day ends on its own
    instant: a second before each local midnight in ``(after, before)``, then the midnight.

    The ledger's day-end work (missed instalments, due-soon reminders, buckets, promises and
    plans) happens at local midnight, and a timer due on either side of it must be decided on
    the right side. In one move across a midnight, both would be due at once and the
    scheduler would see them in whichever order the two services happened to finish: a run
    on a loaded machine sent different reminders than one on a quiet machine.
    """
    out: set[datetime] = set()
    for name in set(zones):
        zone = ZoneInfo(name)
        day = after.astimezone(zone).date()
        while True:
            midnight = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
            if midnight - BEFORE_MIDNIGHT >= before:
                break
            out |= {m for m in (midnight - BEFORE_MIDNIGHT, midnight) if after < m < before}
            day += timedelta(days=1)
    return sorted(out)


def rng(seed: int, *what: object) -> random.Random:
    """A generator for one decision, independent of every other."""
    digest = hashlib.sha256(repr((seed, *what)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pick(r: random.Random, weights: Mapping[Any, float]) -> Any:
    keys = list(weights)
    return r.choices(keys, weights=[weights[k] for k in keys])[0]


@dataclass(frozen=True)
class Installment:
    no: int
    due_date: date
    amount: Decimal


@dataclass
class Customer:
    """One simulated customer with one loan (personal data stays in this process and the
    events it publishes; the report carries ids only)."""

    n: int
    customer_id: str
    account_id: str
    country: str
    timezone: str
    locale: str
    currency: str
    score: int
    segment: Segment
    full_name: str
    national_id: str
    birth_date: date
    phone: str
    email: str | None
    postal_address: str | None
    product: str
    principal: Decimal
    opened_on: date
    schedule: list[Installment]
    behind: int  # past instalments left unpaid at the start
    silent: bool
    hardship: bool = False  # falls behind because of hardship, and says so
    # instalment numbers (in the campaign) the customer lets pass unpaid
    misses: set[int] = field(default_factory=set)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self.zone)


SURNAMES_CN = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"]
GIVEN_CN = ["Wei", "Fang", "Na", "Min", "Jing", "Lei", "Qiang", "Yan", "Jie", "Tao"]
SURNAMES_US = ["Smith", "Johnson", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore"]
GIVEN_US = ["Mary", "James", "Linda", "Robert", "Maria", "David", "Susan", "Daniel"]


def add_months(day: date, months: int, dom: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    return date(year, month % 12 + 1, min(dom, 28))


def segment_of(score: int, bounds: dict[Segment, int]) -> Segment:
    for name, low in sorted(bounds.items(), key=lambda kv: -kv[1]):
        if score >= low:
            return name
    return "subprime"


def make_customer(params: Params, seed: int, n: int) -> Customer:
    r = rng(seed, "customer", n)
    country = str(pick(r, {k: c.weight for k, c in params.countries.items()}))
    c = params.countries[country]
    tz = str(pick(r, c.timezones))
    sc = params.credit_score
    score = int(min(sc.max, max(sc.min, r.gauss(sc.mean, sc.sd))))
    segment = segment_of(score, params.segments)
    product_name = str(pick(r, {k: p.weight for k, p in params.products.items()}))
    product = params.products[product_name]
    principal = Decimal(r.randint(*product.principal) // 100 * 100 or 100)
    count = r.choice(product.installments)
    start_day = params.start.date()
    lo, hi = params.months_on_book
    on_book = r.randint(lo, max(lo, min(hi, count - 1)))  # a loan still running at the start
    dom = r.randint(1, 28)
    opened = add_months(start_day, -on_book, dom)
    # instalments of equal amounts in whole cents, the last one takes the remainder
    each = (principal / count).quantize(CENT, rounding=ROUND_DOWN)
    schedule = [
        Installment(
            i, add_months(opened, i, dom), each if i < count else principal - each * (count - 1)
        )
        for i in range(1, count + 1)
    ]
    past = [i for i in schedule if i.due_date < start_day]
    behind = 0
    if past and r.random() < params.behind_at_start[segment]:
        behind = min(len(past), int(pick(r, params.behind_months)))
    if country == "CN":
        name = f"{r.choice(SURNAMES_CN)} {r.choice(GIVEN_CN)}"
        national_id = (
            f"{r.randint(110000, 659999)}{r.randint(1960, 2004)}{r.randint(0, 99999999):08d}"[:18]
        )
        phone = f"{c.phone_prefix}{r.choice('3578')}{r.randint(0, 999_999_999):09d}"
    else:
        name = f"{r.choice(GIVEN_US)} {r.choice(SURNAMES_US)}"
        national_id = f"{r.randint(100, 899):03d}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        phone = (
            f"{c.phone_prefix}{r.randint(201, 989)}{r.randint(200, 999)}{r.randint(0, 9999):04d}"
        )
    email = f"c{n:07d}@{c.email_domain}" if r.random() < params.has_email else None
    # as each country's bureau expects an address: street, city, and for the US state and ZIP
    street = f"{r.randint(1, 999)} Example Road Unit {n}"
    postal = (
        (
            f"{street}, Springfield, IL {62701 + n % 90}"
            if country == "US"
            else f"{street}, Shanghai"
        )
        if r.random() < params.has_postal_address
        else None
    )
    customer = Customer(
        n=n,
        customer_id=f"C{n:07d}",
        account_id=f"A{n:07d}",
        country=country,
        timezone=tz,
        locale=c.locale,
        currency=c.currency,
        score=score,
        segment=segment,
        full_name=name,
        national_id=national_id,
        birth_date=date(r.randint(1955, 2004), r.randint(1, 12), r.randint(1, 28)),
        phone=phone,
        email=email,
        postal_address=postal,
        product=product_name,
        principal=principal,
        opened_on=opened,
        schedule=schedule,
        behind=behind,
        silent=r.random() < params.silent,
    )
    # its own draw, so that adding it changed no other
    customer.hardship = (
        not customer.silent and rng(seed, "hardship", n).random() < params.humane.hardship[segment]
    )
    end_day = start_day + timedelta(days=params.days)
    for inst in schedule:
        if start_day <= inst.due_date < end_day and r.random() < params.miss_in_campaign[segment]:
            customer.misses.add(inst.no)
    return customer


def book(params: Params, seed: int, customers: int) -> list[Customer]:
    return [make_customer(params, seed, n) for n in range(1, customers + 1)]


def unpaid_at_start(customer: Customer, start: date) -> list[Installment]:
    """The instalments still owed when the campaign starts: the last ``behind`` past ones and
    every future one."""
    past = [i for i in customer.schedule if i.due_date < start]
    return past[len(past) - customer.behind :] + [
        i for i in customer.schedule if i.due_date >= start
    ]


def on_time_payment_at(customer: Customer, inst: Installment, seed: int) -> datetime:
    """When a paying customer pays an instalment: on its due date, in the local daytime."""
    r = rng(seed, "on-time", customer.customer_id, inst.no)
    local = datetime(
        inst.due_date.year,
        inst.due_date.month,
        inst.due_date.day,
        r.randint(7, 20),
        r.randint(0, 59),
        tzinfo=customer.zone,
    )
    return local.astimezone(UTC)


# --- reactions ---------------------------------------------------------------------------------

Outcome = Literal[
    "delivered",
    "bounced",
    "returned",
    "no_answer",
    "right_party",
    "wrong_party",
    "refused",
    "promise_to_pay",
    "plan_accepted",
    "dispute",
]


@dataclass(frozen=True)
class Reaction:
    """What one contact leads to: the partner's status, a reply the customer sends, and whether
    (and when) the customer pays what is overdue or promises to."""

    status: Outcome
    reply: Literal["YES", "STOP", "DISPUTE"] | None = None
    pay_after_days: int | None = None
    promise_days: int | None = None
    keeps_promise: bool = False


def hour_factor(params: Params, local_hour: int) -> float:
    for low, high, factor in params.pay_after_contact.hours:
        if low <= local_hour < high:
            return factor
    return 0.7


def react(
    params: Params,
    seed: int,
    customer: Customer,
    *,
    contact_key: str,
    channel: str,
    offer: bool,
    at: datetime,
) -> Reaction:
    """The customer's reaction to one contact (``contact_key`` names it for the draw)."""
    r = rng(seed, "react", customer.customer_id, contact_key)
    seg = customer.segment
    if channel in ("sms", "email") and r.random() < params.bounce.get(channel, 0):
        return Reaction("bounced")
    if channel == "letter" and r.random() < params.letter_returned:
        return Reaction("returned")
    pay = params.pay_after_contact
    lo, hi = pay.within_days
    p_pay = (
        pay.channel.get(channel, 0)
        * pay.segment[seg]
        * hour_factor(params, customer.local(at).hour)
    )
    if channel == "voice":
        if r.random() < params.voice.wrong_party:
            return Reaction("wrong_party")
        if customer.silent or r.random() >= params.voice.answer[seg]:
            return Reaction("no_answer")
        v = params.voice
        roll = r.random()
        if roll < v.dispute:
            return Reaction("dispute")
        roll -= v.dispute
        if offer and roll < v.plan_if_offered:
            return Reaction("plan_accepted")
        roll -= v.plan_if_offered if offer else 0
        if roll < v.promise:
            return promise(params, seed, customer, contact_key, r)
        roll -= v.promise
        if roll < v.refuse:
            return Reaction("refused")
        return Reaction(
            "right_party", pay_after_days=r.randint(lo, hi) if r.random() < p_pay else None
        )
    if channel == "field_visit":
        f = params.field_visit
        if customer.silent or r.random() >= f.answer:
            return Reaction("no_answer")
        roll = r.random()
        if roll < f.dispute:
            return Reaction("dispute")
        if roll < f.dispute + f.promise:
            return promise(params, seed, customer, contact_key, r)
        return Reaction(
            "right_party", pay_after_days=r.randint(lo, hi) if r.random() < p_pay else None
        )
    status: Outcome = "delivered"
    if customer.silent:
        return Reaction(status)
    if channel in ("sms", "email"):
        rp = params.reply
        roll = r.random()
        if roll < rp.stop:
            return Reaction(status, reply="STOP")
        roll -= rp.stop
        if roll < rp.dispute:
            return Reaction(status, reply="DISPUTE")
        roll -= rp.dispute
        if offer and roll < rp.accept_offer:
            return Reaction(status, reply="YES")
    if r.random() < p_pay:
        return Reaction(status, pay_after_days=r.randint(lo, hi))
    return Reaction(status)


def promise(
    params: Params, seed: int, customer: Customer, contact_key: str, r: random.Random
) -> Reaction:
    days = r.randint(*params.promise.days)
    keeps = (
        rng(seed, "keeps", customer.customer_id, contact_key).random()
        < params.promise.keep[customer.segment]
    )
    return Reaction("promise_to_pay", promise_days=days, keeps_promise=keeps)


def keeps_plan_installment(
    params: Params, seed: int, customer: Customer, plan_id: str, no: int
) -> bool:
    r = rng(seed, "plan", customer.customer_id, plan_id, no)
    return r.random() < params.plan.keep_installment[customer.segment]


def misses_again(params: Params, seed: int, customer: Customer, no: int) -> bool:
    return rng(seed, "again", customer.customer_id, no).random() < params.miss_again


# --- humane collection -------------------------------------------------------------------------

HARDSHIP_TEXTS = {
    "zh-CN": ["我失业了，这个月实在还不上", "住院了，下个月再还", "最近收入减少，还款有困难"],
    "en-US": [
        "I lost my job and cannot pay this month",
        "I am in hospital, please give me time",
        "my hours were cut and I am struggling",
    ],
}


def hardship_text(seed: int, customer: Customer) -> str:
    """What a customer in hardship writes back (a lost job, an illness, less income)."""
    texts = HARDSHIP_TEXTS.get(customer.locale, HARDSHIP_TEXTS["en-US"])
    return rng(seed, "hardship-text", customer.customer_id).choice(texts)


CALLBACK_TEXT = {"zh-CN": "请明天{time}给我打电话", "en-US": "please call me tomorrow at {time}"}


def rescued_by_reminder(params: Params, seed: int, customer: Customer, due: date) -> bool:
    """A customer about to miss the instalment due on ``due`` pays it on time after all."""
    r = rng(seed, "reminder", customer.customer_id, due.isoformat())
    return r.random() < params.humane.reminder_rescue


def accepts_hardship_offer(params: Params, seed: int, customer: Customer, key: str) -> bool:
    return rng(seed, "hardship-offer", customer.customer_id, key).random() < (
        params.humane.hardship_accept
    )


def callback_request(params: Params, seed: int, customer: Customer, key: str) -> str | None:
    """The reply asking for a call at a time, or None (most customers never ask)."""
    r = rng(seed, "callback", customer.customer_id, key)
    if customer.silent or customer.hardship or r.random() >= params.humane.callback_ask:
        return None
    at = r.choice(params.humane.callback_times)
    return CALLBACK_TEXT.get(customer.locale, CALLBACK_TEXT["en-US"]).format(time=at)


def answers_callback(params: Params, seed: int, customer: Customer, key: str) -> Reaction:
    """The customer picks up the call they asked for (or, now and then, does not)."""
    r = rng(seed, "callback-answer", customer.customer_id, key)
    if r.random() >= params.humane.callback_answer:
        return Reaction("no_answer")
    if r.random() < params.voice.promise:
        return promise(params, seed, customer, key, r)
    return Reaction("right_party")


def uses_the_page(params: Params, seed: int, customer: Customer, key: str) -> bool:
    return rng(seed, "page", customer.customer_id, key).random() < params.humane.page
