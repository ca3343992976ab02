"""The campaign's figures, computed from what the services published (their Kafka topics, read
from the beginning) and their report APIs; no database is read. Pure functions over events
(``compute``) and the I/O that gathers them (``gather``)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.scheduler.domain import learning
from services.scheduler.domain.strategy import Strategy, assign_variant
from services.scheduler.strategies import load_files
from shared import topics
from shared.envelope import CloudEvent
from shared.events import (
    RIGHT_PARTY,
    AccountCured,
    CallbackRequested,
    ContactAttempted,
    ContactRequested,
    ContactSuppressed,
    CustomerOptedOut,
    DelinquencyChanged,
    DisputeOpened,
    HardshipReported,
    InstallmentDueSoon,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
    PlanAgreed,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
    ReportBlocked,
    ReportCorrected,
    ReportSubmitted,
)
from shared.history import read_history
from tools.simulator import models
from tools.simulator.system import System

BUCKETS = ["current", "1-29", "30-59", "60-89", "90-119", "120-149", "150-179", "180+"]
Z95 = 1.959964


# events that only add one to a count: (which tally, which count)
TALLIED: dict[type, tuple[str, str]] = {
    PromiseMade: ("promises", "made"),
    PromiseKept: ("promises", "kept"),
    PromiseBroken: ("promises", "broken"),
    PlanAgreed: ("plans", "agreed"),
    PlanActivated: ("plans", "activated"),
    PlanCompleted: ("plans", "completed"),
    PlanBroken: ("plans", "broken"),
    CustomerOptedOut: ("other", "opt_outs"),
    DisputeOpened: ("other", "disputes"),
}


@dataclass
class Account:
    """One account's story as the events tell it."""

    account_id: str = ""
    currency: str = ""
    bucket: str = "current"
    overdue: Decimal = Decimal(0)
    # overdue as the last payment.missed or payment.received said: what a payment can recover
    # (a bucket change or cure is published before the payment that caused it)
    owed: Decimal = Decimal(0)
    exposure: Decimal = Decimal(0)  # the most it was overdue during the campaign
    recovered: Decimal = Decimal(0)
    missed: int = 0
    delinquent_ever: bool = False
    variant: str | None = None
    model_variant: str | None = None  # its variant under the fitted model's strategy version
    requested: int = 0
    sent: int = 0
    suppressed: int = 0
    submitted: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)


def day_of(at: datetime) -> str:
    return at.date().isoformat()


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def wilson(successes: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% interval."""
    n = len(values)
    if n == 0:
        return (0.0, 0.0, 0.0)
    mean = sum(values) / n
    if n == 1:
        return (mean, mean, mean)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return (mean, mean - half, mean + half)


def difference_interval(
    a: Sequence[float], b: Sequence[float], seed: int = 0, rounds: int = 1000
) -> tuple[float, float, float]:
    """Challenger minus champion mean, with a 95% bootstrap interval (seeded: the same figures
    give the same interval)."""
    if not a or not b:
        return (0.0, 0.0, 0.0)
    r = random.Random(seed)
    diffs = sorted(
        sum(r.choices(b, k=len(b))) / len(b) - sum(r.choices(a, k=len(a))) / len(a)
        for _ in range(rounds)
    )
    point = sum(b) / len(b) - sum(a) / len(a)
    return (point, diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1])


@dataclass
class Humane:
    """The humane-collection figures: reminders and on-time payment against the control group
    (the variant that sends none), hardship cases and their cure, callbacks kept, plans agreed
    on the self-service page."""

    due_soon: dict[tuple[str, str], str] = field(default_factory=dict)  # (account, due) -> var
    missed: set[tuple[str, str]] = field(default_factory=set)
    reminders: Counter[str] = field(default_factory=Counter)  # by channel
    hardship: dict[str, datetime] = field(default_factory=dict)  # account -> first report
    hardship_by: Counter[str] = field(default_factory=Counter)
    callbacks_asked: int = 0
    callback_calls: set[str] = field(default_factory=set)
    callbacks_answered: set[str] = field(default_factory=set)
    plans: Counter[str] = field(default_factory=Counter)  # by source
    hardship_plans: int = 0
    hardship_planned: set[str] = field(default_factory=set)  # accounts with a hardship plan
    broken: set[str] = field(default_factory=set)  # accounts whose plan broke

    def see(self, event: CloudEvent) -> None:
        data = event.data
        if isinstance(data, InstallmentDueSoon):
            self.due_soon[(data.account_id, data.due_date.isoformat())] = _variant(data.account_id)
        elif isinstance(data, PaymentMissed):
            self.missed.add((data.account_id, data.due_date.isoformat()))
        elif isinstance(data, ContactRequested):
            if data.purpose == "reminder":
                self.reminders[data.channel] += 1
            elif data.purpose == "callback":
                self.callback_calls.add(data.contact_id)
        elif isinstance(data, ContactAttempted) and data.outcome in RIGHT_PARTY:
            # every conversation: which were callbacks is known only once all is read (the
            # topics' relative order differs from one read to the next)
            self.callbacks_answered.add(data.contact_id)
        elif isinstance(data, HardshipReported):
            self.hardship.setdefault(data.account_id, event.time)
            self.hardship_by[f"{data.source}:{data.reason}"] += 1
        elif isinstance(data, CallbackRequested):
            self.callbacks_asked += 1
        elif isinstance(data, PlanAgreed):
            self.plans[data.source or "-"] += 1
            self.hardship_plans += int(data.hardship)
            if data.hardship:
                self.hardship_planned.add(data.account_id)
        elif isinstance(data, PlanBroken):
            self.broken.add(data.account_id)

    def figures(self, ends: Mapping[str, str]) -> dict[str, Any]:
        on_time: dict[str, list[float]] = defaultdict(list)
        for (account, due), variant in sorted(self.due_soon.items()):
            on_time[variant].append(0.0 if (account, due) in self.missed else 1.0)
        groups = {}
        for variant, values in sorted(on_time.items()):
            paid = int(sum(values))
            low, high = wilson(paid, len(values))
            groups[variant] = {
                "instalments": len(values),
                "paid_by_due_date": paid,
                "rate": round(paid / max(1, len(values)), 4),
                "rate_ci95": [round(low, 4), round(high, 4)],
            }
        difference = None
        if {REMINDED, CONTROL} <= set(on_time):
            point, low, high = difference_interval(on_time[CONTROL], on_time[REMINDED])
            difference = {
                "reminded_minus_control": round(point, 4),
                "ci95": [round(low, 4), round(high, 4)],
                "significant": low > 0 or high < 0,
            }
        cases = sorted(self.hardship)
        # by the standing at the end: the topics' relative order differs from one read to the
        # next, so nothing here may depend on which of two topics' events came first
        cured = sum(1 for a in cases if ends.get(a) == "current")
        low, high = wilson(cured, len(cases))
        # on the road back: current, or keeping the hardship plan at the end
        keeping = sum(
            1
            for a in cases
            if ends.get(a) == "current" or (a in self.hardship_planned and a not in self.broken)
        )
        klow, khigh = wilson(keeping, len(cases))
        agreed = sum(self.plans.values())
        calls = len(self.callback_calls)
        answered = len(self.callbacks_answered & self.callback_calls)
        return {
            "reminders": {
                "instalments_due_soon": len(self.due_soon),
                "sent": sum(self.reminders.values()),
                "by_channel": dict(sorted(self.reminders.items())),
                "reminded_variant": REMINDED,
                "control_variant": CONTROL,
                "paid_by_due_date": groups,
                "difference": difference,
            },
            "hardship": {
                "cases": len(cases),
                "by_source_and_reason": dict(sorted(self.hardship_by.items())),
                "cured": cured,
                "cure_rate": round(cured / max(1, len(cases)), 4),
                "cure_rate_ci95": [round(low, 4), round(high, 4)],
                "plans_agreed_under_hardship": self.hardship_plans,
                "current_or_keeping_a_plan": keeping,
                "recovering_rate": round(keeping / max(1, len(cases)), 4),
                "recovering_rate_ci95": [round(klow, 4), round(khigh, 4)],
            },
            "callbacks": {
                "requested": self.callbacks_asked,
                "calls_placed": calls,
                "answered": answered,
                "kept_rate": round(answered / max(1, calls), 4),
            },
            "plans_by_source": dict(sorted(self.plans.items())),
            "plans_on_the_page_share": round(self.plans["self_service"] / max(1, agreed), 4),
        }


# The variant that reminds before the due date, and the one that does not (the control group).
REMINDED, CONTROL = "champion", "early-plan"
_SHIPPED: list[Strategy] = []


def _variant(account_id: str) -> str:
    """The variant the shipped strategy assigns an account to (by its published hash), known
    for every account told of a due date, reminded or not."""
    if not _SHIPPED:
        _SHIPPED.append(load_files()[0])
    return assign_variant(_SHIPPED[0], account_id).name


def _group(
    members: Sequence[Account], ends: Mapping[str, str]
) -> tuple[dict[str, Any], list[float], list[float]]:
    """One group's cure and recovery (per account, so currencies never mix), with intervals;
    and the per-account values, for a difference between groups."""
    ordered = sorted(members, key=lambda m: m.account_id)
    cures = [1.0 if ends.get(m.account_id, "current") == "current" else 0.0 for m in ordered]
    recovery = [
        float(min(Decimal(1), a.recovered / a.exposure)) if a.exposure > 0 else 0.0
        for a in sorted(members, key=lambda m: (m.currency, m.exposure, m.recovered))
    ]
    cured = int(sum(cures))
    low, high = wilson(cured, len(members))
    mean, rlow, rhigh = mean_interval(recovery)
    stats = {
        "accounts": len(members),
        "cured": cured,
        "cure_rate": round(cured / len(members), 4) if members else 0.0,
        "cure_rate_ci95": [round(low, 4), round(high, 4)],
        "recovery_rate": round(mean, 4),
        "recovery_rate_ci95": [round(rlow, 4), round(rhigh, 4)],
        "recovered": {
            cur: money(sum((m.recovered for m in members if m.currency == cur), Decimal(0)))
            for cur in sorted({m.currency for m in members})
        },
    }
    return stats, cures, recovery


def model_challenger(
    accounts: Mapping[str, Account], ends: Mapping[str, str], fitted: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The fitted model's challenger against the champion, on the accounts in arrears whose
    collection treatment started under the strategy version that carries it (each in the
    variant it was given)."""
    name = fitted.get("challenger")
    if not name:
        return None
    groups = {
        group: [a for a in accounts.values() if a.model_variant == group and a.delinquent_ever]
        for group in ("champion", name)
    }
    stats, cures, recovery = {}, {}, {}
    for group, members in groups.items():
        stats[group], cures[group], recovery[group] = _group(members, ends)
    point, low, high = difference_interval(recovery["champion"], recovery[name])
    cpoint, clow, chigh = difference_interval(cures["champion"], cures[name])
    return {
        "strategy_version": fitted.get("strategy_version"),
        "model_version": fitted.get("model_version"),
        "groups": stats,
        "recovery_rate_difference": round(point, 4),
        "recovery_rate_difference_ci95": [round(low, 4), round(high, 4)],
        "cure_rate_difference": round(cpoint, 4),
        "cure_rate_difference_ci95": [round(clow, 4), round(chigh, 4)],
        "significant": low > 0 or high < 0 or clow > 0 or chigh < 0,
    }


def compute(
    events: Iterable[CloudEvent],
    book: Sequence[Mapping[str, Any]],
    *,
    start: Mapping[str, str],
    end: Mapping[str, str],
    decisions: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any],
    fitted: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(figures, per-account figures). ``start`` and ``end`` map account ids to buckets (the
    ledger's standing after the first and the last clock move)."""
    accounts: dict[str, Account] = {
        row["account_id"]: Account(account_id=row["account_id"], currency=row["currency"])
        for row in book
    }
    challenger_version = (fitted or {}).get("strategy_version")
    contacts_by_day: dict[str, Counter[str]] = defaultdict(Counter)
    outcomes: Counter[str] = Counter()
    suppressed_by_rule: Counter[str] = Counter()
    recovered_by_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    counts: dict[str, Counter[str]] = {"promises": Counter(), "plans": Counter()}
    promises, plans = counts["promises"], counts["plans"]
    plan_kinds: Counter[str] = Counter()
    bureau_cycles: dict[str, Counter[str]] = defaultdict(Counter)
    blocked_by_reason: Counter[str] = Counter()
    other: Counter[str] = Counter()
    counts["other"] = other
    humane = Humane()
    for event in events:
        data = event.data
        humane.see(event)
        account = accounts.get(getattr(data, "account_id", "") or "")
        if isinstance(data, PaymentMissed) and account:
            account.missed += 1
            account.owed = Decimal(data.total_overdue)
            other["payments_missed"] += 1
        if isinstance(data, PaymentMissed | DelinquencyChanged) and account:
            account.overdue = Decimal(data.total_overdue)
            account.bucket = data.bucket
            account.exposure = max(account.exposure, account.overdue)
            account.delinquent_ever |= data.bucket != "current"
        elif isinstance(data, PaymentReceived) and account:
            recovered = min(Decimal(data.amount), account.owed)
            if recovered > 0:
                account.recovered += recovered
                recovered_by_day[day_of(event.time)][data.currency] += recovered
            account.overdue = account.owed = Decimal(data.total_overdue)
        elif isinstance(data, AccountCured) and account:
            account.overdue, account.bucket = Decimal(0), "current"
            other["cures"] += 1
        elif isinstance(data, ContactRequested) and account:
            account.requested += 1
            account.variant = account.variant or data.variant
            collects = data.purpose != "reminder"
            if collects and challenger_version and data.strategy_version == challenger_version:
                account.model_variant = account.model_variant or data.variant
            other["contacts_requested"] += 1
        elif isinstance(data, ContactSuppressed) and account:
            account.suppressed += 1
            account.variant = account.variant or data.variant
            suppressed_by_rule.update(data.reasons)
            other["contacts_suppressed"] += 1
        elif isinstance(data, ContactAttempted) and account:
            outcomes[data.outcome] += 1
            if data.outcome == "sent":
                account.sent += 1
                contacts_by_day[day_of(data.attempted_at)][data.channel] += 1
        elif type(data) in TALLIED:
            tally, name = TALLIED[type(data)]
            counts[tally][name] += 1
            if isinstance(data, PlanAgreed):
                plan_kinds[data.kind] += 1
        elif isinstance(data, ReportSubmitted):
            bureau_cycles[data.cycle]["submitted"] += 1
            if account:
                account.submitted.append(data.cycle)
        elif isinstance(data, ReportBlocked):
            bureau_cycles[data.cycle]["blocked"] += 1
            blocked_by_reason.update(data.reasons)
            if account:
                account.blocked.append(data.cycle)
        elif isinstance(data, ReportCorrected):
            bureau_cycles[data.cycle]["corrected"] += 1
            if account:
                account.corrected.append(data.cycle)

    for account_id, bucket in start.items():
        if bucket != "current" and account_id in accounts:
            accounts[account_id].delinquent_ever = True

    # roll rates: where each account stood after the first clock move and at the end
    roll: dict[str, Counter[str]] = defaultdict(Counter)
    for account_id in accounts:
        roll[start.get(account_id, "current")][end.get(account_id, "current")] += 1
    roll_rates = {
        origin: {
            "accounts": sum(row.values()),
            "to": {b: row[b] for b in BUCKETS if row[b]},
            "worse": round(
                sum(n for b, n in row.items() if BUCKETS.index(b) > BUCKETS.index(origin))
                / max(1, sum(row.values())),
                4,
            ),
            "cured": round(row["current"] / max(1, sum(row.values())), 4)
            if origin != "current"
            else None,
        }
        for origin, row in sorted(roll.items(), key=lambda kv: BUCKETS.index(kv[0]))
    }

    ever = [a for a in accounts.values() if a.delinquent_ever]
    cured_at_end = sum(
        1 for aid, a in accounts.items() if a.delinquent_ever and end.get(aid) == "current"
    )

    # champion against challenger: per-account cure and recovery, so currencies never mix
    by_variant: dict[str, list[Account]] = defaultdict(list)
    for a in accounts.values():
        if a.variant and a.delinquent_ever:
            by_variant[a.variant].append(a)
    variants = {}
    cure_values: dict[str, list[float]] = {}
    recovery_values: dict[str, list[float]] = {}
    ends = {aid: end.get(aid, "current") for aid in accounts}
    for name, members in sorted(by_variant.items()):
        variants[name], cure_values[name], recovery_values[name] = _group(members, ends)
    comparison = None
    if {"champion", "early-plan"} <= set(variants):
        point, low, high = difference_interval(
            recovery_values["champion"], recovery_values["early-plan"]
        )
        comparison = {
            "challenger": "early-plan",
            "champion": "champion",
            "recovery_rate_difference": round(point, 4),
            "recovery_rate_difference_ci95": [round(low, 4), round(high, 4)],
            "significant": low > 0 or high < 0,
        }

    decided: dict[str, Counter[str]] = defaultdict(Counter)
    for row in decisions:
        kind = str(row["kind"])
        decided[kind][str(row["reason"] or "-")] += int(row["count"])

    currencies = sorted({a.currency for a in accounts.values()})
    cumulative: dict[str, list[list[str]]] = {cur: [] for cur in currencies}
    running = {cur: Decimal(0) for cur in currencies}
    for day in sorted(recovered_by_day):
        for cur in currencies:
            running[cur] += recovered_by_day[day].get(cur, Decimal(0))
            cumulative[cur].append([day, money(running[cur])])

    figures = {
        "humane": humane.figures(ends),
        "run": dict(run),
        "book": {
            "customers": len(book),
            "accounts": len(accounts),
            "by_country": dict(Counter(str(r["country"]) for r in book)),
            "by_segment": dict(Counter(str(r["segment"]) for r in book)),
            "delinquent_at_start": sum(1 for b in start.values() if b != "current"),
        },
        "delinquency": {
            "payments_missed": other["payments_missed"],
            "accounts_delinquent_during_campaign": len(ever),
            "accounts_delinquent_at_end": sum(1 for b in end.values() if b != "current"),
            "cure_events": other["cures"],
            "cured_by_end": cured_at_end,
            "cure_rate": round(cured_at_end / max(1, len(ever)), 4),
            "roll_rates": roll_rates,
        },
        "contacts": {
            "requested": other["contacts_requested"],
            "suppressed": other["contacts_suppressed"],
            "sent": sum(sum(c.values()) for c in contacts_by_day.values()),
            "by_day_and_channel": {d: dict(c) for d, c in sorted(contacts_by_day.items())},
            "outcomes": dict(sorted(outcomes.items())),
            "opt_outs": other["opt_outs"],
            "disputes": other["disputes"],
        },
        "decisions": {
            "suppressed_by_rule": dict(sorted(decided["suppressed"].items())),
            "deferred_by_rule": dict(sorted(decided["deferred"].items())),
            "cancelled_by_reason": dict(sorted(decided["cancelled"].items())),
            "fired": sum(decided["fired"].values()),
            "suppression_events_by_rule": dict(sorted(suppressed_by_rule.items())),
        },
        "promises": {
            "made": promises["made"],
            "kept": promises["kept"],
            "broken": promises["broken"],
            "open": promises["made"] - promises["kept"] - promises["broken"],
        },
        "plans": {
            "agreed": plans["agreed"],
            "by_kind": dict(sorted(plan_kinds.items())),
            "activated": plans["activated"],
            "completed": plans["completed"],
            "broken": plans["broken"],
            # kept so far: completed, or active with every instalment due paid
            "kept": plans["activated"] - plans["broken"],
        },
        "recovery": {
            "by_currency": {cur: money(running[cur]) for cur in currencies},
            "cumulative_by_day": cumulative,
        },
        "champion_challenger": {"variants": variants, "comparison": comparison},
        "model_challenger": model_challenger(accounts, ends, fitted) if fitted else None,
        "bureau": {
            "cycles": {c: dict(n) for c, n in sorted(bureau_cycles.items())},
            "submitted": sum(n["submitted"] for n in bureau_cycles.values()),
            "blocked": sum(n["blocked"] for n in bureau_cycles.values()),
            "corrected": sum(n["corrected"] for n in bureau_cycles.values()),
            "blocked_by_reason": dict(sorted(blocked_by_reason.items())),
        },
    }
    per_account = {
        aid: {
            "bucket": a.bucket,
            "overdue": money(a.overdue),
            "missed": a.missed,
            "variant": a.variant,
            "requested": a.requested,
            "sent": a.sent,
            "suppressed": a.suppressed,
            "recovered": money(a.recovered),
            "bureau_submitted": sorted(a.submitted),
            "bureau_blocked": sorted(a.blocked),
        }
        for aid, a in sorted(accounts.items())
        if a.delinquent_ever or a.requested or a.submitted or a.blocked
    }
    return figures, per_account


async def standing(system: System, account_ids: Sequence[str]) -> dict[str, str]:
    """Each account's bucket, from the ledger's reconciliation API."""
    out: dict[str, str] = {}
    for i in range(0, len(account_ids), 10_000):
        response = await system.request(
            "POST",
            f"{system.endpoints.services['ledger']}/v1/accounts/standing",
            json={"account_ids": list(account_ids[i : i + 10_000])},
        )
        response.raise_for_status()
        out |= {row["account_id"]: row["bucket"] for row in response.json()}
    return out


async def gather(system: System, out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    book = json.loads((out / "book.json").read_text())
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    start = json.loads((out / "standing-start.json").read_text())
    end = await standing(system, [r["account_id"] for r in book])
    response = await system.request(
        "GET", f"{system.endpoints.services['scheduler']}/v1/reports/decisions"
    )
    response.raise_for_status()
    async with system.reader(
        topics.LEDGER, topics.SCHEDULER, topics.NOTIFIER, topics.BUREAU
    ) as reader:
        events = await reader.drain()
    fitted = (
        json.loads((out / "models.json").read_text()) if (out / "models.json").exists() else None
    )
    figures, per_account = compute(
        events, book, start=start, end=end, decisions=response.json(), run=run, fitted=fitted
    )
    figures["models"] = await model_figures(system, fitted, run)
    figures["dead_letters"] = await system.dead_letters()
    if (out / "desk.json").exists():
        figures["desk"] = desk_figures(json.loads((out / "desk.json").read_text()), events)
    return figures, per_account


async def model_figures(
    system: System, fitted: Mapping[str, Any] | None, run: Mapping[str, Any]
) -> dict[str, Any]:
    """The model fitted mid-campaign judged after its fit beside the hand-written one, the
    contact table, and the ledger's roll-rate forecast against what happened."""
    out: dict[str, Any] = {"fit": None, "judged": None, "forecast": None}
    end = await system.latest_clock()
    if fitted is not None:
        out["fit"] = {k: v for k, v in fitted.items() if k not in ("model", "seconds")}
        if fitted.get("model"):
            history = await read_history(system.endpoints.bootstrap, learning.TOPICS)
            out["judged"] = await asyncio.to_thread(models.judged, dict(fitted), history, end)
    if run.get("start") and run.get("days"):
        start = datetime.fromisoformat(str(run["start"]))
        out["forecast"] = await models.forecast(system, start, max(end or start, start))
    return out


def desk_figures(desk: dict[str, Any], events: list[CloudEvent]) -> dict[str, Any]:
    """Each collector's results as the desk counts them, beside the same rates for the calls
    and visits external partners made (from ``contact.attempted``)."""
    at_desk = set(desk.get("contacts", []))
    partners: dict[str, Counter[str]] = defaultdict(Counter)
    promised: set[str] = set()
    for event in events:
        data = event.data
        if isinstance(data, ContactAttempted) and data.channel in ("voice", "field_visit"):
            if data.contact_id in at_desk or data.outcome in ("sent", "expired", "failed"):
                continue
            row = partners[data.channel]
            row["contacts"] += 1
            row["right_party"] += data.outcome in RIGHT_PARTY
            if data.outcome == "promise_to_pay":
                row["promises"] += 1
                promised.add(data.contact_id)
            row["plans"] += data.outcome == "plan_accepted"
    collectors = [
        {k: c[k] for k in ("username", "contacts", "right_party", "promises", "kept", "broken")}
        | {"plans": c["plans"], "hardship": c["hardship"]}
        for c in desk.get("collectors", [])
    ]
    return {
        "collectors": collectors,
        "partners": {ch: dict(sorted(c.items())) for ch, c in sorted(partners.items())},
        "items": len(at_desk),
        "queues": [
            {k: q[k] for k in ("channel", "country", "done", "expired", "approval")}
            for q in desk.get("queues", [])
        ],
    }
