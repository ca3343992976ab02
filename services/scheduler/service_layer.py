"""The scheduler's use cases. Each takes the unit of work it runs in and never commits.

State handlers keep what the scheduler knows about customers and accounts up to date; treatment
handlers start, re-plan or cancel an account's timers; :meth:`Scheduler.fire_due` claims due
timers (``FOR UPDATE SKIP LOCKED``, so replicas share the work), asks the compliance engine again
and emits ``contact.requested`` inside the allowed window, defers, or suppresses. Every decision
goes to the ``decision`` table with its reasons and inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import text

from services.scheduler.domain import compliance, policies, scoring
from services.scheduler.domain.compliance import (
    Allowed,
    Contact,
    Pack,
    Party,
    Pause,
    Proposal,
    Settle,
)
from services.scheduler.domain.strategy import (
    AccountFacts,
    Strategy,
    Treatment,
    Variant,
    assign_variant,
    plan,
    treatment_for,
)
from shared.clock import Clock
from shared.consumer import Handlers, Touched
from shared.db import UnitOfWork
from shared.envelope import CloudEvent, new_event
from shared.events import (
    FAILURES,
    RIGHT_PARTY,
    AccountCured,
    AccountFlagged,
    ContactAttempted,
    ContactOffer,
    ContactRequested,
    ContactSuppressed,
    CustomerCeaseRequested,
    CustomerOptedOut,
    CustomerUpserted,
    DelinquencyChanged,
    DisputeOpened,
    DisputeResolved,
    Payload,
    PaymentMissed,
    PaymentReceived,
    PlanActivated,
    PlanBroken,
    PlanCompleted,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
)
from shared.fingerprint import fingerprint

log = logging.getLogger(__name__)
SOURCE = "/arrears/scheduler"
NAMESPACE = uuid.UUID("6f1c2a40-3b1e-4c55-9f0e-0d8f9c1b7a11")
FIRE_BATCH = 2000
# why a treatment's pending steps are cancelled or held: a settle or pause rule of the pack
Why = Literal["nothing_overdue", "part_payment", "restart", "plan_kept", "promise_pending"]
CHANNEL_ADDRESS = {
    "sms": "phone_ref",
    "voice": "phone_ref",
    "email": "email_ref",
    "letter": "postal_ref",
    "field_visit": "postal_ref",
}


# account id, customer id, currency, bucket, days past due, overdue, product
# account, customer, currency, bucket, days past due, overdue, product, next due date and amount
AccountRow = tuple[str, str, str, str, int, Decimal, str | None, date | None, Decimal | None]


def _columns(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """Row dicts as one list per key: the parameters of an ``unnest`` bulk statement."""
    return {key: [row[key] for row in rows] for key in keys}


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def checksum(strategy: Strategy) -> str:
    return hashlib.sha256(strategy.model_dump_json().encode()).hexdigest()


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        packs: Mapping[str, Pack],
        model: scoring.Model,
        fingerprint_key: str,
        default_country: str = "CN",
    ) -> None:
        if default_country not in packs:
            raise ValueError(f"no compliance pack for the default country {default_country}")
        self._clock = clock
        self._packs = dict(packs)
        self._history_days = compliance.history_days(self._packs.values())
        self._model = model
        self._key = fingerprint_key
        self._default_country = default_country
        self._strategies: dict[tuple[str, int], Strategy] = {}  # parsed once per version

    # --- state from core-banking.events ------------------------------------------------------

    async def upsert_customers(
        self, uow: UnitOfWork, customers: Sequence[CustomerUpserted]
    ) -> None:
        latest = list({c.customer_id: c for c in customers}.values())
        await uow.session.execute(
            text("""
                INSERT INTO customer (customer_id, country, timezone, locale, credit_score,
                                      phone_ref, email_ref, postal_ref, updated_at)
                SELECT *, CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:countries AS text[]),
                            CAST(:tzs AS text[]), CAST(:locales AS text[]),
                            CAST(:scores AS int[]), CAST(:phones AS text[]),
                            CAST(:emails AS text[]), CAST(:postals AS text[]))
                ON CONFLICT (customer_id) DO UPDATE
                SET country = excluded.country, timezone = excluded.timezone,
                    locale = excluded.locale, credit_score = excluded.credit_score,
                    phone_ref = excluded.phone_ref, email_ref = excluded.email_ref,
                    postal_ref = excluded.postal_ref, updated_at = excluded.updated_at
            """),
            {
                "ids": [c.customer_id for c in latest],
                "countries": [c.country for c in latest],
                "tzs": [c.timezone for c in latest],
                "locales": [c.locale for c in latest],
                "scores": [c.credit_score for c in latest],
                "phones": [fingerprint("phone", c.phone, self._key) for c in latest],
                "emails": [fingerprint("email", c.email, self._key) for c in latest],
                "postals": [fingerprint("postal", c.postal_address, self._key) for c in latest],
                "now": self._clock.now(),
            },
        )

    async def flag(self, uow: UnitOfWork, data: AccountFlagged, customer_id: str) -> None:
        """``customer_id``: the event's key (every event is keyed by its customer), so a flag
        counts even when it arrives before anything else about the account."""
        await uow.session.execute(
            text("""
                INSERT INTO flag (customer_id, account_id, flag, active, changed_at)
                VALUES (:c, :a, :f, :active, :now)
                ON CONFLICT (customer_id, account_id, flag) DO UPDATE
                SET active = excluded.active, changed_at = excluded.changed_at
            """),
            {
                "c": customer_id,
                "a": data.account_id or "",
                "f": data.flag,
                "active": data.active,
                "now": self._clock.now(),
            },
        )

    # --- state and treatments from ledger.events ---------------------------------------------

    async def payments_missed(self, uow: UnitOfWork, events: Sequence[PaymentMissed]) -> Touched:
        """Record where each account stands, and start a treatment for an account not in one."""
        latest = list({e.account_id: e for e in events}.values())
        await self._upsert_accounts(
            uow,
            [
                (
                    e.account_id,
                    e.customer_id,
                    e.currency,
                    e.bucket,
                    e.days_past_due,
                    e.total_overdue,
                    e.product,
                    e.next_due_date,
                    e.next_due_amount,
                )
                for e in latest
            ],
        )
        in_treatment = set(
            await uow.session.scalars(
                text("""
                    SELECT DISTINCT account_id FROM timer
                    WHERE status = 'pending' AND account_id = ANY(CAST(:ids AS text[]))
                """),
                {"ids": [e.account_id for e in latest]},
            )
        )
        starting = [e.account_id for e in latest if e.account_id not in in_treatment]
        return await self._start_treatments(uow, starting, trigger="payment.missed")

    async def delinquency_changed(
        self, uow: UnitOfWork, data: DelinquencyChanged
    ) -> Touched | None:
        await self._upsert_accounts(
            uow,
            [
                (
                    data.account_id,
                    data.customer_id,
                    data.currency,
                    data.bucket,
                    data.days_past_due,
                    data.total_overdue,
                    data.product,
                    data.next_due_date,
                    data.next_due_amount,
                )
            ],
        )
        current = (
            await uow.session.execute(
                text("SELECT bucket FROM treatment WHERE account_id = :a"), {"a": data.account_id}
            )
        ).scalar()
        pending = await uow.session.scalar(
            text("SELECT count(*) FROM timer WHERE account_id = :a AND status = 'pending'"),
            {"a": data.account_id},
        )
        intent = policies.after_bucket_change(data.bucket, current, pending or 0)
        if isinstance(intent, policies.Cancel):
            await self._cancel(uow, data.account_id, "nothing_overdue", "delinquency.changed")
        elif isinstance(intent, policies.Restart):
            return await self._start_treatments(
                uow, [data.account_id], trigger="delinquency.changed"
            )
        return None

    async def payments_received(self, uow: UnitOfWork, payments: Sequence[PaymentReceived]) -> None:
        """A run of payments at once, with the effect of one after the other: a payment that
        clears the arrears cancels the account's pending steps (those are gathered and cancelled
        in one statement), one that leaves something overdue defers them."""
        now = self._clock.now()
        await uow.session.execute(
            text("""
                INSERT INTO payment_seen (account_id, payment_id, at)
                SELECT a, p, CAST(:now AS timestamptz)
                FROM unnest(CAST(:a AS text[]), CAST(:p AS text[])) AS t (a, p)
                ON CONFLICT DO NOTHING
            """),
            {
                "a": [p.account_id for p in payments],
                "p": [p.payment_id for p in payments],
                "now": now,
            },
        )
        last = {p.account_id: p for p in payments}
        await uow.session.execute(
            text("""
                UPDATE account
                SET overdue = t.o, updated_at = :now,
                    days_past_due = coalesce(t.dpd, account.days_past_due),
                    dpd_as_of = CASE WHEN t.dpd IS NULL THEN account.dpd_as_of ELSE :now END,
                    next_due_date = CASE WHEN t.dpd IS NULL THEN account.next_due_date
                                         ELSE t.nd END,
                    next_due_amount = CASE WHEN t.dpd IS NULL THEN account.next_due_amount
                                           ELSE t.nx END
                FROM unnest(CAST(:a AS text[]), CAST(:o AS numeric[]), CAST(:dpd AS int[]),
                            CAST(:nd AS date[]), CAST(:nx AS numeric[])) AS t (a, o, dpd, nd, nx)
                WHERE account.account_id = t.a
            """),
            {
                "a": list(last),
                "o": [p.total_overdue for p in last.values()],
                "dpd": [p.days_past_due for p in last.values()],
                "nd": [p.next_due_date for p in last.values()],
                "nx": [p.next_due_amount for p in last.values()],
                "now": now,
            },
        )
        rules = await self._rules_of(uow, sorted(last), "part_payment")
        cleared: list[str] = []
        for payment in payments:
            intent = policies.after_payment(
                payment.total_overdue,
                rules[payment.account_id],  # type: ignore[arg-type]
                now,
            )
            if isinstance(intent, policies.Cancel):
                cleared.append(payment.account_id)
                continue
            if cleared:
                await self._cancel_many(uow, cleared, "nothing_overdue", "payment.received")
                cleared = []
            await self._hold(uow, payment.account_id, intent, "payment.received")
            await self._rescore(uow, [payment.account_id])
        if cleared:
            await self._cancel_many(uow, cleared, "nothing_overdue", "payment.received")

    async def _hold(
        self, uow: UnitOfWork, account_id: str, hold: policies.Defer, trigger: str
    ) -> None:
        """Carry out a policy's deferral: every pending step due before ``hold.until`` moves
        there, each with a decision citing the rule."""
        moved = await uow.session.execute(
            text("""
                UPDATE timer SET due_at = CAST(:until AS timestamptz)
                WHERE account_id = :a AND status = 'pending'
                  AND due_at < CAST(:until AS timestamptz)
                RETURNING contact_id
            """),
            {"a": account_id, "until": hold.until},
        )
        for (contact_id,) in moved:
            await self._decide(
                uow,
                account_id,
                "deferred",
                contact_id,
                [hold.rule],
                {"until": hold.until, "trigger": trigger},
            )

    async def contacts_attempted(
        self, uow: UnitOfWork, attempts: Sequence[ContactAttempted]
    ) -> None:
        """A run of attempts in one statement: for a contact reported more than once in the
        run, its last outcome stands and the latest address it names is kept, as one by one."""
        latest: dict[str, ContactAttempted] = {}
        refs: dict[str, str | None] = {}
        for attempt in attempts:
            latest[attempt.contact_id] = attempt
            refs[attempt.contact_id] = attempt.address_ref or refs.get(attempt.contact_id)
        rows = list(latest.values())
        await uow.session.execute(
            text("""
                INSERT INTO contact_log (contact_id, customer_id, account_id, channel, address_ref,
                                         requested_at, outcome, attempted_at)
                SELECT t.id, coalesce(t.c, a.customer_id, ''), t.a, t.ch, t.ref, t.at, t.o, t.at
                FROM unnest(CAST(:id AS text[]), CAST(:c AS text[]), CAST(:a AS text[]),
                            CAST(:ch AS text[]), CAST(:ref AS text[]),
                            CAST(:at AS timestamptz[]), CAST(:o AS text[]))
                       AS t (id, c, a, ch, ref, at, o)
                LEFT JOIN account a ON a.account_id = t.a
                ON CONFLICT (contact_id) DO UPDATE
                SET outcome = excluded.outcome, attempted_at = excluded.attempted_at,
                    address_ref = coalesce(excluded.address_ref, contact_log.address_ref)
            """),
            {
                "id": [r.contact_id for r in rows],
                "c": [r.customer_id for r in rows],
                "a": [r.account_id for r in rows],
                "ch": [r.channel for r in rows],
                "ref": [refs[r.contact_id] for r in rows],
                "at": [r.attempted_at for r in rows],
                "o": [r.outcome for r in rows],
            },
        )
        await self._rescore(uow, sorted({r.account_id for r in rows}))

    async def account_cured(self, uow: UnitOfWork, data: AccountCured) -> None:
        await self._cancel(uow, data.account_id, "nothing_overdue", "account.cured")

    async def plan_activated(self, uow: UnitOfWork, data: PlanActivated) -> None:
        await self._set_account(uow, data.account_id, "plan_kept = true")
        await self._cancel(uow, data.account_id, "plan_kept", "plan.activated")

    async def plan_broken(self, uow: UnitOfWork, data: PlanBroken) -> Touched:
        await self._set_account(uow, data.account_id, "plan_kept = false")
        await self._rescore(uow, [data.account_id])
        return await self._start_treatments(uow, [data.account_id], trigger="plan.broken")

    async def plan_completed(self, uow: UnitOfWork, data: PlanCompleted) -> None:
        await self._set_account(uow, data.account_id, "plan_kept = false")
        await self._cancel(uow, data.account_id, "nothing_overdue", "plan.completed")

    async def promise_made(self, uow: UnitOfWork, data: PromiseMade) -> None:
        await uow.session.execute(
            text("UPDATE account SET promise_due = :d WHERE account_id = :a"),
            {"d": data.due_date, "a": data.account_id},
        )
        rule = (await self._rules_of(uow, [data.account_id], "promise_pending"))[data.account_id]
        hold = policies.promise_hold(data.due_date, rule)  # type: ignore[arg-type]
        await self._hold(uow, data.account_id, hold, "promise.made")

    async def promise_kept(self, uow: UnitOfWork, data: PromiseKept) -> None:
        await self._set_account(
            uow, data.account_id, "promise_due = NULL, kept_promises = kept_promises + 1"
        )
        await self._rescore(uow, [data.account_id])

    async def promise_broken(self, uow: UnitOfWork, data: PromiseBroken) -> Touched:
        await self._set_account(
            uow, data.account_id, "promise_due = NULL, broken_promises = broken_promises + 1"
        )
        await self._rescore(uow, [data.account_id])
        now = self._clock.now()
        resumed = await uow.session.execute(
            text("""
                UPDATE timer SET due_at = least(due_at, CAST(:now AS timestamptz))
                WHERE account_id = :a AND status = 'pending' RETURNING contact_id
            """),
            {"a": data.account_id, "now": now},
        )
        intent = policies.after_broken_promise(len(resumed.all()))
        if isinstance(intent, policies.Restart):
            return await self._start_treatments(uow, [data.account_id], trigger="promise.broken")
        return Touched.of([data.account_id])  # the resumed steps fire in the settle step

    # --- state from notifier.events ----------------------------------------------------------

    async def opted_out(self, uow: UnitOfWork, data: CustomerOptedOut) -> None:
        await uow.session.execute(
            text("""
                INSERT INTO opt_out (customer_id, channel, address_ref, at)
                VALUES (:c, :ch, :ref, :now) ON CONFLICT DO NOTHING
            """),
            {
                "c": data.customer_id,
                "ch": data.channel,
                "ref": data.address_ref or "",
                "now": self._clock.now(),
            },
        )

    async def cease_requested(self, uow: UnitOfWork, data: CustomerCeaseRequested) -> None:
        await uow.session.execute(
            text("""
                INSERT INTO customer (customer_id, ceased, updated_at) VALUES (:c, true, :now)
                ON CONFLICT (customer_id) DO UPDATE
                SET ceased = true, updated_at = excluded.updated_at
            """),
            {"c": data.customer_id, "now": self._clock.now()},
        )

    async def dispute(self, uow: UnitOfWork, account_id: str, is_open: bool) -> None:
        await self._set_account(uow, account_id, f"dispute_open = {'true' if is_open else 'false'}")

    # --- treatments --------------------------------------------------------------------------

    async def _start_treatments(
        self, uow: UnitOfWork, account_ids: Sequence[str], trigger: str
    ) -> Touched:
        """Score, assign a variant, pick the treatment for each account's segment and arm its
        timers (replacing any pending ones). Accounts no published strategy covers get none.
        Returns the accounts, for the settle step to fire what is due at once (a day-0 step goes
        out with the event that started it)."""
        if not account_ids:
            return Touched()
        now = self._clock.now()
        scores = await self._rescore(uow, account_ids)
        facts = await self._facts(uow, account_ids)
        strategies = await self.published(uow)
        await self._cancel_many(uow, account_ids, "restart", trigger, quiet=True)
        timers: list[dict[str, Any]] = []
        treatments: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        assignments: list[dict[str, Any]] = []
        for account_id in account_ids:
            fact = facts.get(account_id)
            if fact is None:
                continue
            customer_id, account_facts = fact
            chosen = self._choose(strategies, account_id, account_facts)
            score = scores.get(account_id)
            inputs = {
                "bucket": account_facts.bucket,
                "score": score.value if score else None,
                "score_band": account_facts.score_band,
                "country": account_facts.country,
                "overdue": account_facts.overdue,
                "trigger": trigger,
            }
            if chosen is None:
                decisions.append(
                    self._decision_row(account_id, "segment", None, ["no-treatment"], inputs, now)
                )
                continue
            strategy, variant, treatment = chosen
            assignments.append(
                {"a": account_id, "s": strategy.id, "v": strategy.version, "variant": variant.name}
            )
            decisions.append(
                self._decision_row(
                    account_id, "segment", None, [f"treatment:{treatment.name}"], inputs, now
                )
            )
            decisions.append(
                self._decision_row(
                    account_id,
                    "variant",
                    None,
                    [f"{strategy.id}@{strategy.version}:{variant.name}"],
                    {"role": variant.role, "weight": variant.weight},
                    now,
                )
            )
            treatments.append(
                {
                    "a": account_id,
                    "s": strategy.id,
                    "v": strategy.version,
                    "variant": variant.name,
                    "name": treatment.name,
                    "bucket": account_facts.bucket,
                }
            )
            episode = (
                f"{account_id}|{strategy.id}|{strategy.version}|{treatment.name}|{now.isoformat()}"
            )
            steps = []
            for planned in plan(treatment, now):
                contact_id = str(uuid.uuid5(NAMESPACE, f"{episode}|{planned.step_no}"))
                offer = planned.step.offer
                timers.append(
                    {
                        "id": contact_id,
                        "a": account_id,
                        "c": customer_id,
                        "s": strategy.id,
                        "v": strategy.version,
                        "variant": variant.name,
                        "t": treatment.name,
                        "n": planned.step_no,
                        "ch": planned.step.channel,
                        "tpl": planned.step.template,
                        "offer": None
                        if offer is None
                        else offer.model_dump_json(exclude_none=True),
                        "due": planned.due_at,
                    }
                )
                steps.append(
                    {
                        "contact_id": contact_id,
                        "step_no": planned.step_no,
                        "channel": planned.step.channel,
                        "template": planned.step.template,
                        "due_at": planned.due_at,
                    }
                )
            # One audit row for the whole path; each timer's own fate is recorded as it fires.
            decisions.append(
                self._decision_row(
                    account_id, "scheduled", None, [treatment.name], {"steps": steps}, now
                )
            )
        if assignments:
            await uow.session.execute(
                text("""
                    INSERT INTO assignment (account_id, strategy_id, version, variant, assigned_at)
                    SELECT *, CAST(:now AS timestamptz)
                    FROM unnest(CAST(:a AS text[]), CAST(:s AS text[]), CAST(:v AS int[]),
                                CAST(:variant AS text[]))
                    ON CONFLICT DO NOTHING
                """),
                _columns(assignments, ("a", "s", "v", "variant")) | {"now": now},
            )
        if treatments:
            await uow.session.execute(
                text("""
                    INSERT INTO treatment (account_id, strategy_id, version, variant, name, bucket,
                                           started_at)
                    SELECT *, CAST(:now AS timestamptz)
                    FROM unnest(CAST(:a AS text[]), CAST(:s AS text[]), CAST(:v AS int[]),
                                CAST(:variant AS text[]), CAST(:name AS text[]),
                                CAST(:bucket AS text[]))
                    ON CONFLICT (account_id) DO UPDATE
                    SET strategy_id = excluded.strategy_id, version = excluded.version,
                        variant = excluded.variant, name = excluded.name,
                        bucket = excluded.bucket, started_at = excluded.started_at
                """),
                _columns(treatments, ("a", "s", "v", "variant", "name", "bucket")) | {"now": now},
            )
        if timers:
            await uow.session.execute(
                text("""
                    INSERT INTO timer (contact_id, account_id, customer_id, strategy_id, version,
                                       variant, treatment, step_no, channel, template, offer,
                                       due_at, created_at)
                    SELECT *, CAST(:now AS timestamptz)
                    FROM unnest(CAST(:id AS text[]), CAST(:a AS text[]), CAST(:c AS text[]),
                                CAST(:s AS text[]), CAST(:v AS int[]), CAST(:variant AS text[]),
                                CAST(:t AS text[]), CAST(:n AS int[]), CAST(:ch AS text[]),
                                CAST(:tpl AS text[]), CAST(:offer AS jsonb[]),
                                CAST(:due AS timestamptz[]))
                    ON CONFLICT (contact_id) DO NOTHING
                """),
                _columns(
                    timers,
                    ("id", "a", "c", "s", "v", "variant", "t", "n", "ch", "tpl", "offer", "due"),
                )
                | {"now": now},
            )
        await self._write_decisions(uow, decisions)
        return Touched.of(account_ids)

    def _choose(
        self, strategies: Sequence[Strategy], account_id: str, facts: AccountFacts
    ) -> tuple[Strategy, Variant, Treatment] | None:
        for strategy in strategies:
            variant = assign_variant(strategy, account_id)
            treatment = treatment_for(variant, facts)
            if treatment is not None:
                return strategy, variant, treatment
        return None

    async def published(self, uow: UnitOfWork) -> list[Strategy]:
        rows = await uow.session.execute(
            text("""
                SELECT strategy_id, version, body FROM strategy_version
                WHERE status = 'published' ORDER BY strategy_id
            """)
        )
        found = []
        for strategy_id, version, body in rows:
            key = (strategy_id, version)
            if key not in self._strategies:
                self._strategies[key] = Strategy.model_validate(body)
            found.append(self._strategies[key])
        return found

    async def _cancel(self, uow: UnitOfWork, account_id: str, why: Why, trigger: str) -> None:
        await self._cancel_many(uow, [account_id], why, trigger)

    async def _cancel_many(
        self,
        uow: UnitOfWork,
        account_ids: Sequence[str],
        why: Why,
        trigger: str,
        *,
        quiet: bool = False,
    ) -> None:
        """Cancel the accounts' pending steps; each decision cites the rule of the account's
        pack that says why (``why``), and the event that brought it (``trigger``)."""
        now = self._clock.now()
        rows = list(
            await uow.session.execute(
                text("""
                    UPDATE timer SET status = 'cancelled', settled_at = :now
                    WHERE account_id = ANY(CAST(:ids AS text[])) AND status = 'pending'
                    RETURNING account_id, contact_id
                """),
                {"ids": list(account_ids), "now": now},
            )
        )
        rules = await self._rules_of(uow, sorted({a for a, _ in rows}), why)
        await self._write_decisions(
            uow,
            [
                self._decision_row(a, "cancelled", c, [rules[a].id], {"trigger": trigger}, now)
                for a, c in rows
            ],
        )
        if not quiet:
            await uow.session.execute(
                text("DELETE FROM treatment WHERE account_id = ANY(CAST(:ids AS text[]))"),
                {"ids": list(account_ids)},
            )

    # --- firing ------------------------------------------------------------------------------

    async def fire_due(self, uow: UnitOfWork, accounts: Sequence[str] | None = None) -> int:
        """Claim due timers (all, or some accounts'), decide each again, and fire, defer or
        suppress it. Returns how many timers it settled or moved."""
        now = self._clock.now()
        where = "" if accounts is None else "AND account_id = ANY(CAST(:ids AS text[]))"
        claimed = await uow.session.execute(
            text(f"""
                SELECT contact_id, account_id, customer_id, strategy_id, version, variant,
                       treatment, step_no, channel, template, offer, due_at
                FROM timer
                WHERE status = 'pending' AND due_at <= :now {where}
                ORDER BY due_at, contact_id
                LIMIT {FIRE_BATCH}
                FOR UPDATE SKIP LOCKED
            """),  # noqa: S608 - the only interpolations are constants
            {"now": now, "ids": list(accounts or [])},
        )
        due = [dict(row) for row in claimed.mappings()]
        if not due:
            return 0
        account_ids = sorted({row["account_id"] for row in due})
        parties = await self._parties(uow, account_ids)
        history = await self._history(uow, sorted({row["customer_id"] for row in due}), now)
        facts = await self._standing(uow, account_ids)
        fired: list[dict[str, Any]] = []
        settled: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        for row in due:
            party = parties.get(row["account_id"])
            if party is None:  # the account's state never arrived; keep the timer
                continue
            pack, fallback = self._pack_for(party)
            contacts = history.setdefault(party.customer_id, [])
            verdict = compliance.decide(
                pack, party, contacts, Proposal(row["channel"], max(row["due_at"], now)), now
            )
            notes = list(verdict.notes) + ([fallback] if fallback else [])
            inputs = {
                "pack": f"{pack.country}@{pack.version}",
                "channel": row["channel"],
                "notes": notes,
            }
            contact_id = row["contact_id"]
            if isinstance(verdict, Allowed) and verdict.not_before <= now:
                fired.append(dict(row))
                decisions.append(
                    self._decision_row(
                        row["account_id"],
                        "fired",
                        contact_id,
                        list(verdict.deferred_by),
                        inputs | {"not_before": now, "not_after": verdict.not_after},
                        now,
                    )
                )
                contacts.append(
                    Contact(
                        row["account_id"], row["channel"], now, party.addresses.get(row["channel"])
                    )
                )
                self._publish(
                    uow,
                    row["customer_id"],
                    row["account_id"],
                    self._requested(row, now, verdict.not_after, facts.get(row["account_id"])),
                )
            elif isinstance(verdict, Allowed):
                moved.append({"id": contact_id, "due": verdict.not_before})
                decisions.append(
                    self._decision_row(
                        row["account_id"],
                        "deferred",
                        contact_id,
                        list(verdict.deferred_by),
                        inputs | {"until": verdict.not_before},
                        now,
                    )
                )
            else:
                kind = "cancelled" if verdict.kind == "pause" else "suppressed"
                settled.append({"id": contact_id, "status": kind, "now": now})
                decisions.append(
                    self._decision_row(
                        row["account_id"], kind, contact_id, list(verdict.rules), inputs, now
                    )
                )
                if kind == "suppressed":
                    self._publish(
                        uow,
                        row["customer_id"],
                        row["account_id"],
                        ContactSuppressed(
                            account_id=row["account_id"],
                            channel=row["channel"],
                            reasons=list(verdict.rules),
                            customer_id=row["customer_id"],
                            contact_id=contact_id,
                            strategy=row["strategy_id"],
                            variant=row["variant"],
                        ),
                    )
        if fired:
            await uow.session.execute(
                text("""
                    UPDATE timer t SET status = 'fired', settled_at = CAST(:now AS timestamptz)
                    WHERE t.contact_id = ANY(CAST(:ids AS text[]))
                """),
                {"ids": [r["contact_id"] for r in fired], "now": now},
            )
            await uow.session.execute(
                text("""
                    INSERT INTO contact_log (contact_id, customer_id, account_id, channel,
                                             address_ref, requested_at)
                    SELECT * , CAST(:now AS timestamptz)
                    FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                                CAST(:accounts AS text[]), CAST(:channels AS text[]),
                                CAST(:refs AS text[]))
                    ON CONFLICT (contact_id) DO NOTHING
                """),
                {
                    "ids": [r["contact_id"] for r in fired],
                    "customers": [r["customer_id"] for r in fired],
                    "accounts": [r["account_id"] for r in fired],
                    "channels": [r["channel"] for r in fired],
                    "refs": [parties[r["account_id"]].addresses.get(r["channel"]) for r in fired],
                    "now": now,
                },
            )
        if settled:
            await uow.session.execute(
                text("UPDATE timer SET status = :status, settled_at = :now WHERE contact_id = :id"),
                settled,
            )
        if moved:
            await uow.session.execute(
                text("UPDATE timer SET due_at = :due WHERE contact_id = :id"), moved
            )
        await self._write_decisions(uow, decisions)
        return len(fired) + len(settled) + len(moved)

    def _requested(
        self,
        row: Mapping[str, Any],
        now: datetime,
        not_after: datetime,
        standing: Mapping[str, Any] | None,
    ) -> ContactRequested:
        offer = None
        if row["offer"]:
            offer = ContactOffer(offer_id=f"{row['contact_id']}:offer", **row["offer"])
        return ContactRequested(
            contact_id=row["contact_id"],
            account_id=row["account_id"],
            customer_id=row["customer_id"],
            channel=row["channel"],
            template=row["template"],
            not_before=now,
            not_after=not_after,
            strategy=row["strategy_id"],
            variant=row["variant"],
            strategy_version=row["version"],
            step_no=row["step_no"],
            offer=offer,
            total_overdue=standing["overdue"] if standing else None,
            currency=standing["currency"] if standing else None,
            days_past_due=standing["days_past_due"] if standing else None,
            locale=standing["locale"] if standing else None,
        )

    async def _rules_of(
        self, uow: UnitOfWork, account_ids: Sequence[str], why: Why
    ) -> dict[str, Settle | Pause]:
        """The rule behind ``why`` in each account's pack (its customer's country's)."""
        if not account_ids:
            return {}
        rows = await uow.session.execute(
            text("""
                SELECT a.account_id, c.country
                FROM account a LEFT JOIN customer c USING (customer_id)
                WHERE a.account_id = ANY(CAST(:ids AS text[]))
            """),
            {"ids": list(account_ids)},
        )
        countries: dict[str, str | None] = {r.account_id: r.country for r in rows}
        found: dict[str, Settle | Pause] = {}
        for account_id in account_ids:
            pack = self._packs.get(countries.get(account_id) or "", None)
            pack = pack or self._packs[self._default_country]
            found[account_id] = (
                pack.pause(why) if why in ("plan_kept", "promise_pending") else pack.settle(why)  # type: ignore[arg-type]
            )
        return found

    def _pack_for(self, party: Party) -> tuple[Pack, str | None]:
        if party.country in self._packs:
            return self._packs[party.country], None
        what = "no country" if not party.country else f"no pack for {party.country}"
        return self._packs[self._default_country], f"{what}: used the {self._default_country} pack"

    # --- loading what decisions need ---------------------------------------------------------

    async def _parties(self, uow: UnitOfWork, account_ids: Sequence[str]) -> dict[str, Party]:
        rows = await uow.session.execute(
            text("""
                SELECT a.account_id, a.customer_id, a.dispute_open, a.plan_kept, a.promise_due,
                       c.country, c.timezone, c.phone_ref, c.email_ref, c.postal_ref,
                       coalesce(c.ceased, false) AS ceased,
                       ARRAY(SELECT f.flag FROM flag f
                             WHERE f.customer_id = a.customer_id AND f.active
                               AND f.account_id IN ('', a.account_id)) AS flags,
                       ARRAY(SELECT o.channel || ' ' || o.address_ref FROM opt_out o
                             WHERE o.customer_id = a.customer_id) AS opt_outs
                FROM account a LEFT JOIN customer c ON c.customer_id = a.customer_id
                WHERE a.account_id = ANY(CAST(:ids AS text[]))
            """),
            {"ids": list(account_ids)},
        )
        parties = {}
        for r in rows.mappings():
            addresses = {
                channel: r[column] for channel, column in CHANNEL_ADDRESS.items() if r[column]
            }
            opted: set[tuple[str, str]] = set()
            for entry in r["opt_outs"]:
                channel, _, ref = entry.partition(" ")
                # An opt-out without an address covers whatever address the channel has now.
                opted.add((channel, ref or addresses.get(channel, "")))
            parties[r["account_id"]] = Party(
                customer_id=r["customer_id"],
                account_id=r["account_id"],
                country=r["country"],
                timezone=r["timezone"],
                addresses=addresses,
                opted_out=frozenset(opted),
                ceased=r["ceased"],
                dispute_open=r["dispute_open"],
                flags=frozenset(r["flags"]),
                plan_kept=r["plan_kept"],
                promise_due=r["promise_due"],
            )
        return parties

    async def _history(
        self, uow: UnitOfWork, customer_ids: Sequence[str], now: datetime
    ) -> dict[str, list[Contact]]:
        rows = await uow.session.execute(
            text("""
                SELECT customer_id, account_id, channel, coalesce(attempted_at, requested_at) AS at,
                       address_ref, outcome
                FROM contact_log
                WHERE customer_id = ANY(CAST(:ids AS text[])) AND requested_at >= :since
            """),
            {"ids": list(customer_ids), "since": now - timedelta(days=self._history_days)},
        )
        history: dict[str, list[Contact]] = {}
        for r in rows:
            history.setdefault(r.customer_id, []).append(
                Contact(r.account_id, r.channel, r.at, r.address_ref, r.outcome)
            )
        return history

    async def _standing(
        self, uow: UnitOfWork, account_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        rows = await uow.session.execute(
            # As of now, not of the miss that started the treatment: days past due go on
            # counting in the customer's calendar (not while a plan is kept), and the next
            # instalment counts as overdue from its due date (the ledger announces it only
            # once missed, after the grace days). A message never understates what is owed.
            text("""
                SELECT a.account_id, a.currency, c.locale,
                       a.overdue + CASE WHEN a.next_due_date < l.today
                                        THEN a.next_due_amount ELSE 0 END AS overdue,
                       a.days_past_due
                         + CASE WHEN a.days_past_due > 0 AND NOT a.plan_kept
                                     AND a.dpd_as_of IS NOT NULL
                                THEN greatest(0, l.today - (a.dpd_as_of AT TIME ZONE l.tz)::date)
                                ELSE 0 END AS days_past_due
                FROM account a LEFT JOIN customer c USING (customer_id)
                CROSS JOIN LATERAL (
                  SELECT coalesce(c.timezone, 'UTC') AS tz,
                         (CAST(:now AS timestamptz)
                          AT TIME ZONE coalesce(c.timezone, 'UTC'))::date AS today) l
                WHERE a.account_id = ANY(CAST(:ids AS text[]))
            """),
            {"ids": list(account_ids), "now": self._clock.now()},
        )
        return {r["account_id"]: dict(r) for r in rows.mappings()}

    async def _facts(
        self, uow: UnitOfWork, account_ids: Sequence[str]
    ) -> dict[str, tuple[str, AccountFacts]]:
        rows = await uow.session.execute(
            text("""
                SELECT a.account_id, a.customer_id, a.bucket, a.overdue, a.product, c.country,
                       coalesce(s.band, 'medium') AS band
                FROM account a
                LEFT JOIN customer c USING (customer_id)
                LEFT JOIN score s USING (account_id)
                WHERE a.account_id = ANY(CAST(:ids AS text[]))
            """),
            {"ids": list(account_ids)},
        )
        return {
            r.account_id: (
                r.customer_id,
                AccountFacts(
                    bucket=r.bucket,
                    score_band=r.band,
                    product=r.product,
                    country=r.country,
                    overdue=r.overdue,
                ),
            )
            for r in rows
        }

    async def _rescore(
        self, uow: UnitOfWork, account_ids: Sequence[str]
    ) -> dict[str, scoring.Score]:
        now = self._clock.now()
        rows = await uow.session.execute(
            text("""
                SELECT a.account_id, c.credit_score, a.days_past_due, a.broken_promises,
                       a.kept_promises,
                       (SELECT count(*) FROM payment_seen p
                        WHERE p.account_id = a.account_id AND p.at >= :since) AS payments_90d,
                       (SELECT count(*) FROM contact_log l
                        WHERE l.account_id = a.account_id
                          AND l.outcome = ANY(CAST(:talks AS text[]))) AS talks,
                       (SELECT count(*) FROM contact_log l
                        WHERE l.account_id = a.account_id
                          AND l.outcome = ANY(CAST(:failures AS text[]))) AS failures
                FROM account a LEFT JOIN customer c USING (customer_id)
                WHERE a.account_id = ANY(CAST(:ids AS text[]))
            """),
            {
                "ids": list(account_ids),
                "since": now - timedelta(days=90),
                "talks": sorted(RIGHT_PARTY),
                "failures": sorted(FAILURES),
            },
        )
        scores = {}
        for r in rows:
            scores[r.account_id] = scoring.score(
                scoring.Inputs(
                    credit_score=r.credit_score,
                    days_past_due=r.days_past_due,
                    payments_90d=r.payments_90d,
                    broken_promises=r.broken_promises,
                    kept_promises=r.kept_promises,
                    right_party_contacts=r.talks,
                    failed_contacts=r.failures,
                ),
                self._model,
            )
        if scores:
            await uow.session.execute(
                text("""
                    INSERT INTO score (account_id, value, band, model_version, inputs,
                                       contributions, computed_at)
                    SELECT * , CAST(:now AS timestamptz)
                    FROM unnest(CAST(:ids AS text[]), CAST(:values AS numeric[]),
                                CAST(:bands AS text[]), CAST(:versions AS int[]),
                                CAST(:inputs AS jsonb[]), CAST(:contributions AS jsonb[]))
                    ON CONFLICT (account_id) DO UPDATE
                    SET value = excluded.value, band = excluded.band,
                        model_version = excluded.model_version, inputs = excluded.inputs,
                        contributions = excluded.contributions, computed_at = excluded.computed_at
                """),
                {
                    "ids": list(scores),
                    "values": [s.value for s in scores.values()],
                    "bands": [s.band for s in scores.values()],
                    "versions": [s.model_version for s in scores.values()],
                    "inputs": [_json(s.inputs) for s in scores.values()],
                    "contributions": [_json(s.contributions) for s in scores.values()],
                    "now": now,
                },
            )
        return scores

    # --- helpers -----------------------------------------------------------------------------

    async def _upsert_accounts(self, uow: UnitOfWork, rows: Iterable[AccountRow]) -> None:
        rows = list(rows)
        await uow.session.execute(
            text("""
                INSERT INTO account (account_id, customer_id, currency, bucket, days_past_due,
                                     overdue, product, next_due_date, next_due_amount,
                                     updated_at, dpd_as_of)
                SELECT *, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
                FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                            CAST(:currencies AS text[]), CAST(:buckets AS text[]),
                            CAST(:dpds AS int[]), CAST(:overdues AS numeric[]),
                            CAST(:products AS text[]), CAST(:next_dates AS date[]),
                            CAST(:next_amounts AS numeric[]))
                ON CONFLICT (account_id) DO UPDATE
                SET currency = excluded.currency, bucket = excluded.bucket,
                    product = coalesce(excluded.product, account.product),
                    days_past_due = excluded.days_past_due, overdue = excluded.overdue,
                    next_due_date = excluded.next_due_date,
                    next_due_amount = excluded.next_due_amount,
                    updated_at = excluded.updated_at, dpd_as_of = excluded.dpd_as_of
            """),
            {
                "ids": [r[0] for r in rows],
                "customers": [r[1] for r in rows],
                "currencies": [r[2] for r in rows],
                "buckets": [r[3] for r in rows],
                "dpds": [r[4] for r in rows],
                "overdues": [r[5] for r in rows],
                "products": [r[6] for r in rows],
                "next_dates": [r[7] for r in rows],
                "next_amounts": [r[8] for r in rows],
                "now": self._clock.now(),
            },
        )

    async def _set_account(self, uow: UnitOfWork, account_id: str, assignments: str) -> None:
        # ``assignments`` is always a constant from this module, never input.
        await uow.session.execute(
            text(f"UPDATE account SET {assignments}, updated_at = :now WHERE account_id = :a"),  # noqa: S608
            {"a": account_id, "now": self._clock.now()},
        )

    def _decision_row(
        self,
        account_id: str,
        kind: str,
        contact_id: str | None,
        reasons: list[str],
        inputs: Mapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "a": account_id,
            "k": kind,
            "c": contact_id,
            "r": reasons,
            "i": _json(inputs),
            "now": now,
        }

    async def _decide(
        self,
        uow: UnitOfWork,
        account_id: str,
        kind: str,
        contact_id: str | None,
        reasons: list[str],
        inputs: Mapping[str, Any],
    ) -> None:
        await self._write_decisions(
            uow,
            [self._decision_row(account_id, kind, contact_id, reasons, inputs, self._clock.now())],
        )

    async def _write_decisions(self, uow: UnitOfWork, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        await uow.session.execute(
            text("""
                INSERT INTO decision (account_id, kind, contact_id, reasons, inputs, at)
                SELECT a, k, c, CASE WHEN r = '' THEN '{}' ELSE string_to_array(r, chr(31)) END,
                       i, at
                FROM unnest(CAST(:a AS text[]), CAST(:k AS text[]), CAST(:c AS text[]),
                            CAST(:r AS text[]), CAST(:i AS jsonb[]), CAST(:now AS timestamptz[]))
                  AS t (a, k, c, r, i, at)
            """),
            {
                "a": [r["a"] for r in rows],
                "k": [r["k"] for r in rows],
                "c": [r["c"] for r in rows],
                # a text[] per row would need a 2-D array; reasons travel joined and are split back
                "r": ["\x1f".join(r["r"]) for r in rows],
                "i": [r["i"] for r in rows],
                "now": [r["now"] for r in rows],
            },
        )

    async def settle(self, uow: UnitOfWork, touched: Touched) -> None:
        """After a transaction's handlers: fire what is already due for the accounts they
        touched, in one pass (a day-0 step goes out with the event that started it)."""
        await self.fire_due(uow, list(touched.accounts))

    def _publish(self, uow: UnitOfWork, customer_id: str, account_id: str, data: Payload) -> None:
        uow.publish(
            new_event(
                data, source=SOURCE, key=customer_id, time=self._clock.now(), subject=account_id
            )
        )


def handlers(scheduler: Scheduler) -> Handlers:
    """What the scheduler does with each payload it reads."""
    registry = Handlers()
    registry.runs(CustomerUpserted, scheduler.upsert_customers)
    registry.runs(PaymentMissed, scheduler.payments_missed)
    registry.runs(PaymentReceived, scheduler.payments_received)
    registry.runs(ContactAttempted, scheduler.contacts_attempted)

    registry.on(DelinquencyChanged, scheduler.delinquency_changed)
    registry.on(AccountCured, scheduler.account_cured)
    registry.on(PlanActivated, scheduler.plan_activated)
    registry.on(PlanBroken, scheduler.plan_broken)
    registry.on(PlanCompleted, scheduler.plan_completed)
    registry.on(PromiseMade, scheduler.promise_made)
    registry.on(PromiseKept, scheduler.promise_kept)
    registry.on(PromiseBroken, scheduler.promise_broken)
    registry.on(CustomerOptedOut, scheduler.opted_out)
    registry.on(CustomerCeaseRequested, scheduler.cease_requested)

    async def account_flagged(uow: UnitOfWork, data: AccountFlagged, event: CloudEvent) -> None:
        await scheduler.flag(uow, data, data.customer_id or event.key)

    async def dispute_opened(uow: UnitOfWork, data: DisputeOpened, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, True)

    async def dispute_resolved(uow: UnitOfWork, data: DisputeResolved, _: CloudEvent) -> None:
        await scheduler.dispute(uow, data.account_id, False)

    registry.each(AccountFlagged, account_flagged)
    registry.each(DisputeOpened, dispute_opened)
    registry.each(DisputeResolved, dispute_resolved)
    return registry
