"""Treatments: starting one for an account's segment, cancelling or holding its steps, and
firing its due timers through the compliance engine (``contact.requested`` inside the allowed
window, deferred, or suppressed). Every decision goes to the audit trail with its reasons and
inputs. Each method takes the unit of work it runs in and never commits."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from services.scheduler.domain import choice, compliance, policies, scoring
from services.scheduler.domain.compliance import (
    Allowed,
    Contact,
    HardshipPause,
    Pack,
    Party,
    Pause,
    Proposal,
    Settle,
)
from services.scheduler.domain.strategy import (
    AccountFacts,
    Offer,
    Step,
    Strategy,
    Treatment,
    Trigger,
    Variant,
    assign_variant,
    plan,
    treatment_for,
)
from services.scheduler.repository import accounts, facts, strategies, timers
from services.scheduler.repository import models as model_rows
from services.scheduler.repository.facts import Standing
from services.scheduler.repository.timers import (
    Assignment,
    Decision,
    Purpose,
    Timer,
    TreatmentRow,
)
from shared.clock import Clock
from shared.consumer import Touched
from shared.db import UnitOfWork
from shared.envelope import new_event
from shared.events import Channel, ContactOffer, ContactRequested, ContactSuppressed, Payload

SOURCE = "/arrears/scheduler"
NAMESPACE = uuid.UUID("6f1c2a40-3b1e-4c55-9f0e-0d8f9c1b7a11")
SettleWhy = Literal["nothing_overdue", "part_payment", "restart", "due_passed"]
PauseWhy = Literal["plan_kept", "promise_pending", "hardship"]
# The strategy trigger each purpose of timers starts from.
TRIGGERS: Mapping[Purpose, Trigger] = {
    "collection": "missed",
    "reminder": "due_soon",
    "hardship": "hardship",
}
# What a new treatment of each purpose replaces: a reminder replaces nothing, a callback the
# customer asked for is kept through a restart.
REPLACES: Mapping[Purpose, tuple[Purpose, ...]] = {
    "collection": ("collection", "reminder", "hardship"),
    "reminder": (),
    "hardship": ("collection", "reminder", "hardship"),
}


class Treatments:
    def __init__(
        self,
        clock: Clock,
        packs: Mapping[str, Pack],
        model: scoring.Model,
        default_country: str = "CN",
    ) -> None:
        if default_country not in packs:
            raise ValueError(f"no compliance pack for the default country {default_country}")
        self._clock = clock
        self._packs = dict(packs)
        self._model = model
        self._default_country = default_country
        self._history_days = compliance.history_days(self._packs.values())
        self._strategies: dict[tuple[str, int], Strategy] = {}  # parsed once per version
        self._models: dict[int, scoring.Model] = {}

    # --- starting, holding and cancelling ----------------------------------------------------

    async def start(
        self,
        uow: UnitOfWork,
        account_ids: Sequence[str],
        trigger: str,
        *,
        purpose: Purpose = "collection",
        begin: Mapping[str, datetime] | None = None,
        context: Mapping[str, dict[str, Any]] | None = None,
    ) -> Touched:
        """Score, assign a variant, pick the treatment for each account's segment and arm its
        timers. Accounts no published strategy covers get none. ``purpose``: a collection
        treatment (after a miss), a reminder before a due date (replacing nothing, starting no
        collection) or a hardship treatment (from ``begin``, the end of the breather); a
        collection or hardship treatment replaces the pending steps of any other. Returns the
        accounts, for the settle step to fire what is due at once (a day-0 step goes out with
        the event that started it)."""
        if not account_ids:
            return Touched()
        now = self._clock.now()
        inputs = await facts.score_inputs(uow.session, account_ids, now)
        segments = await facts.facts(uow.session, account_ids)
        published = await self.published(uow)
        models = await self.models(uow)
        if REPLACES[purpose]:
            await self.cancel(
                uow, account_ids, "restart", trigger, quiet=True, purposes=REPLACES[purpose]
            )
        planned: list[Timer] = []
        started: list[TreatmentRow] = []
        assigned: list[Assignment] = []
        decisions: list[Decision] = []
        scores: dict[str, scoring.Score] = {}
        for account_id in account_ids:
            fact = segments.get(account_id)
            if fact is None:
                continue
            customer_id, account_facts = fact
            chosen, score = self._choose(
                published,
                models,
                account_id,
                account_facts,
                inputs.get(account_id),
                TRIGGERS[purpose],
            )
            if score is not None:
                scores[account_id] = score
            inputs_seen = {
                "bucket": account_facts.bucket,
                "score": score.value if score else None,
                "score_band": score.band if score else account_facts.score_band,
                "model_version": score.model_version if score else None,
                "country": account_facts.country,
                "overdue": account_facts.overdue,
                "times_late": account_facts.times_late,
                "trigger": trigger,
                "purpose": purpose,
            }
            if chosen is None:
                decisions.append(
                    Decision(account_id, "segment", None, ["no-treatment"], inputs_seen, now)
                )
                continue
            strategy, variant, treatment = chosen
            assigned.append(Assignment(account_id, strategy.id, strategy.version, variant.name))
            decisions.append(
                Decision(
                    account_id, "segment", None, [f"treatment:{treatment.name}"], inputs_seen, now
                )
            )
            decisions.append(
                Decision(
                    account_id,
                    "variant",
                    None,
                    [f"{strategy.id}@{strategy.version}:{variant.name}"],
                    {"role": variant.role, "weight": variant.weight},
                    now,
                )
            )
            if purpose != "reminder":  # the treatment in force (a reminder is none)
                started.append(
                    TreatmentRow(
                        account_id,
                        strategy.id,
                        strategy.version,
                        variant.name,
                        treatment.name,
                        account_facts.bucket,
                    )
                )
            episode = (
                f"{account_id}|{strategy.id}|{strategy.version}|{treatment.name}|{now.isoformat()}"
            )
            steps = []
            extra = (context or {}).get(account_id)
            for step in plan(treatment, (begin or {}).get(account_id, now)):
                contact_id = str(uuid.uuid5(NAMESPACE, f"{episode}|{step.step_no}"))
                offer = _offer(step.step.offer, treatment, purpose)
                planned.append(
                    Timer(
                        contact_id,
                        account_id,
                        customer_id,
                        strategy.id,
                        strategy.version,
                        variant.name,
                        treatment.name,
                        step.step_no,
                        step.step.channel,
                        step.step.template,
                        offer,
                        step.due_at,
                        purpose,
                        extra,
                    )
                )
                steps.append(
                    {
                        "contact_id": contact_id,
                        "step_no": step.step_no,
                        "channel": step.step.channel,
                        "template": step.step.template,
                        "due_at": step.due_at,
                    }
                )
            # One audit row for the whole path; each timer's own fate is recorded as it fires.
            decisions.append(
                Decision(account_id, "scheduled", None, [treatment.name], {"steps": steps}, now)
            )
        await facts.save_scores(uow.session, scores, now)
        await timers.start(uow.session, assigned, started, planned, now)
        await timers.record(uow.session, decisions)
        return Touched.of(account_ids)

    def _choose(
        self,
        published: Sequence[Strategy],
        models: Mapping[int, scoring.Model],
        account_id: str,
        account: AccountFacts,
        inputs: scoring.Inputs | None,
        trigger: Trigger = "missed",
    ) -> tuple[tuple[Strategy, Variant, Treatment] | None, scoring.Score | None]:
        """The first published strategy with a treatment for the account, scored with the model
        its variant names (the segment's score band is that model's); and the score."""
        score = None
        for strategy in published:
            variant = assign_variant(strategy, account_id)
            model = models.get(variant.model or self._model.version, self._model)
            if inputs is not None:
                score = scoring.score(inputs, model)
                account = replace(account, score_band=score.band)
            treatment = treatment_for(variant, account, trigger)
            if treatment is not None:
                return (strategy, variant, treatment), score
        if inputs is not None:
            score = scoring.score(inputs, self._model)
        return None, score

    async def models(self, uow: UnitOfWork) -> dict[int, scoring.Model]:
        """The published model versions (parsed once each); the shipped one always."""
        found = {self._model.version: self._model}
        for version, body in await model_rows.published(uow.session):
            if version not in self._models:
                self._models[version] = scoring.Model.model_validate(body)
            found[version] = self._models[version]
        return found

    async def published(self, uow: UnitOfWork) -> list[Strategy]:
        found = []
        for strategy_id, version, body in await strategies.published(uow.session):
            key = (strategy_id, version)
            if key not in self._strategies:
                self._strategies[key] = Strategy.model_validate(body)
            found.append(self._strategies[key])
        return found

    async def hold(
        self, uow: UnitOfWork, account_id: str, hold: policies.Defer, trigger: str
    ) -> None:
        """Carry out a policy's deferral: every pending step due before ``hold.until`` moves
        there, each with a decision citing the rule."""
        now = self._clock.now()
        moved = await timers.hold(uow.session, account_id, hold.until)
        await timers.record(
            uow.session,
            [
                Decision(
                    account_id,
                    "deferred",
                    contact_id,
                    [hold.rule],
                    {"until": hold.until, "trigger": trigger},
                    now,
                )
                for contact_id in moved
            ],
        )

    async def cancel(
        self,
        uow: UnitOfWork,
        account_ids: Sequence[str],
        why: SettleWhy | PauseWhy,
        trigger: str,
        *,
        quiet: bool = False,
        purposes: Sequence[Purpose] = timers.ALL_PURPOSES,
    ) -> None:
        """Cancel the accounts' pending steps (of ``purposes``); each decision cites the rule of
        the account's pack that says why (``why``), and the event that brought it
        (``trigger``). ``quiet``: the treatment stays (a new one is starting)."""
        now = self._clock.now()
        cancelled = await timers.cancel_pending(uow.session, account_ids, now, purposes)
        packs = await self._packs_of(uow, sorted({a for a, _ in cancelled}))
        await timers.record(
            uow.session,
            [
                Decision(
                    a, "cancelled", c, [self._rule(packs[a], why).id], {"trigger": trigger}, now
                )
                for a, c in cancelled
            ],
        )
        if not quiet:
            await timers.end_treatments(uow.session, account_ids)

    async def settle_rules(
        self, uow: UnitOfWork, account_ids: Sequence[str], why: SettleWhy
    ) -> dict[str, Settle]:
        packs = await self._packs_of(uow, account_ids)
        return {a: pack.settle(why) for a, pack in packs.items()}

    async def pause_rule(
        self, uow: UnitOfWork, account_id: str, why: Literal["plan_kept", "promise_pending"]
    ) -> Pause:
        return (await self._packs_of(uow, [account_id]))[account_id].pause(why)

    def _rule(self, pack: Pack, why: SettleWhy | PauseWhy) -> Settle | Pause | HardshipPause:
        if why == "hardship":
            return pack.hardship()
        if why == "plan_kept" or why == "promise_pending":
            return pack.pause(why)
        return pack.settle(why)

    async def pack_of(self, uow: UnitOfWork, account_id: str) -> Pack:
        return (await self._packs_of(uow, [account_id]))[account_id]

    async def _packs_of(self, uow: UnitOfWork, account_ids: Sequence[str]) -> dict[str, Pack]:
        """Each account's pack: its customer's country's, else the default."""
        if not account_ids:
            return {}
        countries = await accounts.countries(uow.session, account_ids)
        default = self._packs[self._default_country]
        return {a: self._packs.get(countries.get(a) or "", default) for a in account_ids}

    def _pack_for(self, party: Party) -> tuple[Pack, str | None]:
        if party.country in self._packs:
            return self._packs[party.country], None
        what = "no country" if not party.country else f"no pack for {party.country}"
        return self._packs[self._default_country], f"{what}: used the {self._default_country} pack"

    async def rescore(
        self, uow: UnitOfWork, account_ids: Sequence[str]
    ) -> dict[str, scoring.Score]:
        """Score again with the model each account was last scored with (its variant's)."""
        now = self._clock.now()
        inputs = await facts.score_inputs(uow.session, account_ids, now)
        used = await facts.model_versions(uow.session, account_ids)
        models = await self.models(uow)
        scores = {
            a: scoring.score(i, models.get(used.get(a) or self._model.version, self._model))
            for a, i in inputs.items()
        }
        await facts.save_scores(uow.session, scores, now)
        return scores

    # --- a callback the customer asked for ----------------------------------------------------

    async def callback(
        self,
        uow: UnitOfWork,
        account_id: str,
        customer_id: str,
        channel: Channel,
        asked: datetime,
        event_id: str,
    ) -> Touched:
        """Plan the call at the time asked if the pack allows it, else at the next allowed time,
        and record which rules moved it. It counts against the caps like any call (it is
        decided again when it falls due)."""
        now = self._clock.now()
        party = (await facts.parties(uow.session, [account_id])).get(account_id)
        if party is None:
            return Touched()
        pack, fallback = self._pack_for(party)
        since = now - timedelta(days=self._history_days)
        seen = Seen(
            await facts.history(
                uow.session, [customer_id], sorted(set(party.addresses.values())), since
            )
        )
        proposal = Proposal(channel, max(asked, now), requested=True)
        verdict = compliance.decide(pack, party, seen.of(party), proposal, now)
        contact_id = str(uuid.uuid5(NAMESPACE, f"callback|{event_id}"))
        inputs: dict[str, Any] = {
            "pack": f"{pack.country}@{pack.version}",
            "channel": channel,
            "asked": asked,
            "notes": list(verdict.notes) + ([fallback] if fallback else []),
        }
        if not isinstance(verdict, Allowed):
            await timers.record(
                uow.session,
                [Decision(account_id, "suppressed", contact_id, list(verdict.rules), inputs, now)],
            )
            uow.publish(
                new_event(
                    ContactSuppressed(
                        account_id=account_id,
                        channel=channel,
                        reasons=list(verdict.rules),
                        customer_id=customer_id,
                        contact_id=contact_id,
                        strategy="callback",
                        variant="callback",
                    ),
                    source=SOURCE,
                    key=customer_id,
                    time=now,
                    subject=account_id,
                )
            )
            return Touched()
        current = await timers.current_treatment(uow.session, account_id)
        timer = Timer(
            contact_id,
            account_id,
            customer_id,
            current.strategy_id if current else "callback",
            current.version if current else 0,
            current.variant if current else "callback",
            "callback",
            0,
            channel,
            "callback",
            None,
            verdict.not_before,
            "callback",
            {"asked_at": asked.isoformat()},
        )
        await timers.start(uow.session, [], [], [timer], now)
        await timers.record(
            uow.session,
            [
                Decision(
                    account_id,
                    "callback",
                    contact_id,
                    list(verdict.deferred_by),
                    inputs | {"planned": verdict.not_before},
                    now,
                )
            ],
        )
        return Touched.of([account_id])

    # --- firing ------------------------------------------------------------------------------

    async def fire_due(self, uow: UnitOfWork, account_ids: Sequence[str] | None = None) -> int:
        """Claim due timers (all, or some accounts'), decide each again, and fire, defer or
        suppress it. Returns how many timers it settled or moved."""
        now = self._clock.now()
        due = await timers.claim_due(uow.session, now, account_ids)
        if not due:
            return 0
        claimed = sorted({t.account_id for t in due})
        parties = await facts.parties(uow.session, claimed)
        since = now - timedelta(days=self._history_days)
        addresses = sorted({ref for p in parties.values() for ref in p.addresses.values()})
        customers = sorted({t.customer_id for t in due})
        history = Seen(await facts.history(uow.session, customers, addresses, since))
        standing = await facts.standings(uow.session, claimed, now)
        steps = await self._steps_of(uow, due)
        choosy = sorted(
            {t.account_id for t in due if (st := steps.get(t.contact_id)) and _asks(st)}
        )
        credit = await facts.credit_scores(uow.session, choosy) if choosy else {}
        models = await self.models(uow) if choosy else {}
        fired: list[Timer] = []
        settled: list[tuple[str, str]] = []
        moved: list[tuple[str, datetime]] = []
        decisions: list[Decision] = []
        for timer in due:
            party = parties.get(timer.account_id)
            if party is None:  # the account's state never arrived; keep the timer
                continue
            pack, fallback = self._pack_for(party)
            inputs: dict[str, Any] = {
                "pack": f"{pack.country}@{pack.version}",
                "channel": timer.channel,
                "purpose": timer.purpose,
            }
            if timer.purpose == "reminder" and policies.reminder_lapsed(
                timer.context, now, party.timezone or pack.default_timezone
            ):
                settled.append((timer.contact_id, "cancelled"))
                decisions.append(
                    Decision(
                        timer.account_id,
                        "cancelled",
                        timer.contact_id,
                        [pack.settle("due_passed").id],
                        inputs,
                        now,
                    )
                )
                continue
            step = steps.get(timer.contact_id)
            chose: list[str] = []
            model = self._model
            if step is not None and _asks(step):
                model = models.get(self._variant_model(timer), self._model)
                segment = model.segment_of(credit.get(timer.account_id))
                inputs["segment"] = segment
                inputs["model_version"] = model.version
            if step is not None and step.best_of:
                timer, why = self._best_channel(
                    timer, step, model, inputs["segment"], pack, party, history, now
                )
                inputs["best_channel"] = why
                inputs["channel"] = timer.channel
                chose.append(f"best-channel:{timer.channel}")
            proposal = Proposal(
                timer.channel, max(timer.due_at, now), requested=timer.purpose == "callback"
            )
            verdict = compliance.decide(pack, party, history.of(party), proposal, now)
            inputs["notes"] = list(verdict.notes) + ([fallback] if fallback else [])
            later = None
            if step is not None and step.best_hour and isinstance(verdict, Allowed):
                later = self._best_hour(timer, model, inputs["segment"], party, pack, verdict, now)
            if later is not None:
                until, why = later
                moved.append((timer.contact_id, until))
                decisions.append(
                    Decision(
                        timer.account_id,
                        "deferred",
                        timer.contact_id,
                        [*chose, f"best-hour:{why['hour']}"],
                        inputs | {"until": until, "best_hour": why},
                        now,
                    )
                )
            elif isinstance(verdict, Allowed) and verdict.not_before <= now:
                fired.append(timer)
                decisions.append(
                    Decision(
                        timer.account_id,
                        "fired",
                        timer.contact_id,
                        [*chose, *verdict.deferred_by],
                        inputs | {"not_before": now, "not_after": verdict.not_after},
                        now,
                    )
                )
                history.add(
                    Contact(
                        timer.account_id,
                        timer.channel,
                        now,
                        party.addresses.get(timer.channel),
                        customer_id=party.customer_id,
                    )
                )
                self._publish(
                    uow,
                    timer,
                    requested(timer, now, verdict.not_after, standing.get(timer.account_id)),
                )
            elif isinstance(verdict, Allowed):
                moved.append((timer.contact_id, verdict.not_before))
                decisions.append(
                    Decision(
                        timer.account_id,
                        "deferred",
                        timer.contact_id,
                        [*chose, *verdict.deferred_by],
                        inputs | {"until": verdict.not_before},
                        now,
                    )
                )
            else:
                kind = "cancelled" if verdict.kind == "pause" else "suppressed"
                settled.append((timer.contact_id, kind))
                decisions.append(
                    Decision(
                        timer.account_id, kind, timer.contact_id, list(verdict.rules), inputs, now
                    )
                )
                if kind == "suppressed":
                    self._publish(
                        uow,
                        timer,
                        ContactSuppressed(
                            account_id=timer.account_id,
                            channel=timer.channel,
                            reasons=list(verdict.rules),
                            customer_id=timer.customer_id,
                            contact_id=timer.contact_id,
                            strategy=timer.strategy_id,
                            variant=timer.variant,
                        ),
                    )
        if fired:
            refs = [parties[t.account_id].addresses.get(t.channel) for t in fired]
            await timers.fired(uow.session, fired, refs, now)
        await timers.settle(uow.session, settled, now)
        await timers.move(uow.session, moved)
        await timers.record(uow.session, decisions)
        return len(fired) + len(settled) + len(moved)

    async def _steps_of(self, uow: UnitOfWork, due: Sequence[Timer]) -> dict[str, Step]:
        """The strategy step each timer was planned from (versions parsed once each)."""
        found = {}
        for timer in due:
            key = (timer.strategy_id, timer.version)
            if key not in self._strategies:
                body = await strategies.body(uow.session, *key)
                if body is None:
                    continue
                self._strategies[key] = Strategy.model_validate(body)
            variant = next(
                (v for v in self._strategies[key].variants if v.name == timer.variant), None
            )
            treatment = variant and next(
                (t for t in variant.treatments if t.name == timer.treatment), None
            )
            if treatment and 1 <= timer.step_no <= len(treatment.steps):
                found[timer.contact_id] = treatment.steps[timer.step_no - 1]
        return found

    def _variant_model(self, timer: Timer) -> int:
        strategy = self._strategies.get((timer.strategy_id, timer.version))
        variant = strategy and next((v for v in strategy.variants if v.name == timer.variant), None)
        return (variant.model if variant else None) or self._model.version

    def _best_channel(
        self,
        timer: Timer,
        step: Step,
        model: scoring.Model,
        segment: str,
        pack: Pack,
        party: Party,
        history: Seen,
        now: datetime,
    ) -> tuple[Timer, dict[str, Any]]:
        """The best-ranked candidate the customer has an address for and the pack allows (now
        or later); the step's own channel when none is."""
        ranked = choice.rank_channels(model.contact_rates, segment, list(step.best_of))
        why: dict[str, Any] = {
            "ranked": [
                {"channel": r.channel, "payment_rate": r.payment_rate, "contacts": r.contacts}
                for r in ranked
            ],
        }
        for r in ranked:
            if r.channel not in party.addresses:
                continue
            proposal = Proposal(r.channel, max(timer.due_at, now))
            if isinstance(
                compliance.decide(pack, party, history.of(party), proposal, now), Allowed
            ):
                why["chosen"] = r.channel
                return replace(
                    timer,
                    channel=r.channel,
                    template=step.best_of[r.channel],
                ), why
        why["chosen"] = timer.channel
        why["note"] = "no candidate allowed or reachable: the step's own channel"
        return timer, why

    def _best_hour(
        self,
        timer: Timer,
        model: scoring.Model,
        segment: str,
        party: Party,
        pack: Pack,
        verdict: Allowed,
        now: datetime,
    ) -> tuple[datetime, dict[str, Any]] | None:
        """A later hour of the window the contact may go in today, when its rate is better."""
        zone = ZoneInfo(party.timezone or pack.default_timezone)
        start = max(verdict.not_before, now).astimezone(zone)
        closes = (verdict.not_after - timedelta(minutes=1)).astimezone(zone)
        last = closes.hour if closes.date() == start.date() else 23
        found = choice.best_hour(model.contact_rates, segment, timer.channel, start.hour, last)
        if found is None:
            return None
        until = start.replace(hour=found.hour, minute=0, second=0, microsecond=0)
        if until >= verdict.not_after or until <= start:
            return None
        return until.astimezone(UTC), {
            "hour": found.hour,
            "payment_rate": found.payment_rate,
            "rate_now": found.now_rate,
            "hour_now": start.hour,
        }

    def _publish(self, uow: UnitOfWork, timer: Timer, data: Payload) -> None:
        uow.publish(
            new_event(
                data,
                source=SOURCE,
                key=timer.customer_id,
                time=self._clock.now(),
                subject=timer.account_id,
            )
        )


def _asks(step: Step) -> bool:
    return bool(step.best_of) or step.best_hour


class Seen:
    """The contacts a pass of decisions knows of, each customer's and each address's (the
    contacts it fires join them, so a second timer for the same customer, or for another
    customer at the same number, sees the first)."""

    def __init__(self, contacts: Sequence[Contact]) -> None:
        self._by_customer: dict[str, list[Contact]] = {}
        self._by_address: dict[str, list[Contact]] = {}
        for contact in contacts:
            self.add(contact)

    def add(self, contact: Contact) -> None:
        self._by_customer.setdefault(contact.customer_id or "", []).append(contact)
        if contact.address:
            self._by_address.setdefault(contact.address, []).append(contact)

    def of(self, party: Party) -> list[Contact]:
        found = {id(c): c for c in self._by_customer.get(party.customer_id, [])}
        for address in set(party.addresses.values()):
            found.update((id(c), c) for c in self._by_address.get(address, []))
        return list(found.values())


def _offer(offer: Offer | None, treatment: Treatment, purpose: Purpose) -> dict[str, Any] | None:
    """A step's offer as its timer keeps it: the terms, the treatment's limits (how far the
    customer may bend them) and whether a hardship treatment made it."""
    if offer is None:
        return None
    kept = offer.model_dump(mode="json", exclude_none=True)
    if treatment.limits is not None:
        kept["limits"] = treatment.limits.model_dump(mode="json", exclude_none=True)
    if purpose == "hardship":
        kept["hardship"] = True
    return kept


def requested(
    timer: Timer, now: datetime, not_after: datetime, standing: Standing | None
) -> ContactRequested:
    offer = None
    if timer.offer:
        offer = ContactOffer(offer_id=f"{timer.contact_id}:offer", **timer.offer)
    context = timer.context or {}
    return ContactRequested(
        contact_id=timer.contact_id,
        account_id=timer.account_id,
        customer_id=timer.customer_id,
        channel=timer.channel,
        template=timer.template,
        not_before=now,
        not_after=not_after,
        strategy=timer.strategy_id,
        variant=timer.variant,
        strategy_version=timer.version,
        step_no=timer.step_no,
        offer=offer,
        total_overdue=standing.overdue if standing else None,
        currency=standing.currency if standing else None,
        days_past_due=standing.days_past_due if standing else None,
        locale=standing.locale if standing else None,
        purpose=timer.purpose,
        due_date=context.get("due_date"),
        amount_due=context.get("amount"),
        treatment=timer.treatment,
        propensity=standing.propensity if standing else None,
        country=standing.country if standing else None,
    )
