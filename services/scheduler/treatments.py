"""Treatments: starting one for an account's segment, cancelling or holding its steps, and
firing its due timers through the compliance engine (``contact.requested`` inside the allowed
window, deferred, or suppressed). Every decision goes to the audit trail with its reasons and
inputs. Each method takes the unit of work it runs in and never commits."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

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
from services.scheduler.repository import accounts, facts, strategies, timers
from services.scheduler.repository.facts import Standing
from services.scheduler.repository.timers import Assignment, Decision, Timer, TreatmentRow
from shared.clock import Clock
from shared.consumer import Touched
from shared.db import UnitOfWork
from shared.envelope import new_event
from shared.events import ContactOffer, ContactRequested, ContactSuppressed, Payload

SOURCE = "/arrears/scheduler"
NAMESPACE = uuid.UUID("6f1c2a40-3b1e-4c55-9f0e-0d8f9c1b7a11")
SettleWhy = Literal["nothing_overdue", "part_payment", "restart"]
PauseWhy = Literal["plan_kept", "promise_pending"]


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

    # --- starting, holding and cancelling ----------------------------------------------------

    async def start(self, uow: UnitOfWork, account_ids: Sequence[str], trigger: str) -> Touched:
        """Score, assign a variant, pick the treatment for each account's segment and arm its
        timers (replacing any pending ones). Accounts no published strategy covers get none.
        Returns the accounts, for the settle step to fire what is due at once (a day-0 step goes
        out with the event that started it)."""
        if not account_ids:
            return Touched()
        now = self._clock.now()
        scores = await self.rescore(uow, account_ids)
        segments = await facts.facts(uow.session, account_ids)
        published = await self.published(uow)
        await self.cancel(uow, account_ids, "restart", trigger, quiet=True)
        planned: list[Timer] = []
        started: list[TreatmentRow] = []
        assigned: list[Assignment] = []
        decisions: list[Decision] = []
        for account_id in account_ids:
            fact = segments.get(account_id)
            if fact is None:
                continue
            customer_id, account_facts = fact
            chosen = self._choose(published, account_id, account_facts)
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
                    Decision(account_id, "segment", None, ["no-treatment"], inputs, now)
                )
                continue
            strategy, variant, treatment = chosen
            assigned.append(Assignment(account_id, strategy.id, strategy.version, variant.name))
            decisions.append(
                Decision(account_id, "segment", None, [f"treatment:{treatment.name}"], inputs, now)
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
            for step in plan(treatment, now):
                contact_id = str(uuid.uuid5(NAMESPACE, f"{episode}|{step.step_no}"))
                offer = step.step.offer
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
                        None if offer is None else offer.model_dump(mode="json", exclude_none=True),
                        step.due_at,
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
        await timers.start(uow.session, assigned, started, planned, now)
        await timers.record(uow.session, decisions)
        return Touched.of(account_ids)

    def _choose(
        self, published: Sequence[Strategy], account_id: str, facts: AccountFacts
    ) -> tuple[Strategy, Variant, Treatment] | None:
        for strategy in published:
            variant = assign_variant(strategy, account_id)
            treatment = treatment_for(variant, facts)
            if treatment is not None:
                return strategy, variant, treatment
        return None

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
    ) -> None:
        """Cancel the accounts' pending steps; each decision cites the rule of the account's
        pack that says why (``why``), and the event that brought it (``trigger``). ``quiet``:
        the treatment stays (a new one is starting)."""
        now = self._clock.now()
        cancelled = await timers.cancel_pending(uow.session, account_ids, now)
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

    async def pause_rule(self, uow: UnitOfWork, account_id: str, why: PauseWhy) -> Pause:
        return (await self._packs_of(uow, [account_id]))[account_id].pause(why)

    def _rule(self, pack: Pack, why: SettleWhy | PauseWhy) -> Settle | Pause:
        if why == "plan_kept" or why == "promise_pending":
            return pack.pause(why)
        return pack.settle(why)

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
        now = self._clock.now()
        inputs = await facts.score_inputs(uow.session, account_ids, now)
        scores = {a: scoring.score(i, self._model) for a, i in inputs.items()}
        await facts.save_scores(uow.session, scores, now)
        return scores

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
        history = await facts.history(uow.session, sorted({t.customer_id for t in due}), since)
        standing = await facts.standings(uow.session, claimed, now)
        fired: list[Timer] = []
        settled: list[tuple[str, str]] = []
        moved: list[tuple[str, datetime]] = []
        decisions: list[Decision] = []
        for timer in due:
            party = parties.get(timer.account_id)
            if party is None:  # the account's state never arrived; keep the timer
                continue
            pack, fallback = self._pack_for(party)
            contacts = history.setdefault(party.customer_id, [])
            verdict = compliance.decide(
                pack, party, contacts, Proposal(timer.channel, max(timer.due_at, now)), now
            )
            notes = list(verdict.notes) + ([fallback] if fallback else [])
            inputs: dict[str, Any] = {
                "pack": f"{pack.country}@{pack.version}",
                "channel": timer.channel,
                "notes": notes,
            }
            if isinstance(verdict, Allowed) and verdict.not_before <= now:
                fired.append(timer)
                decisions.append(
                    Decision(
                        timer.account_id,
                        "fired",
                        timer.contact_id,
                        list(verdict.deferred_by),
                        inputs | {"not_before": now, "not_after": verdict.not_after},
                        now,
                    )
                )
                contacts.append(
                    Contact(
                        timer.account_id, timer.channel, now, party.addresses.get(timer.channel)
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
                        list(verdict.deferred_by),
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


def requested(
    timer: Timer, now: datetime, not_after: datetime, standing: Standing | None
) -> ContactRequested:
    offer = None
    if timer.offer:
        offer = ContactOffer(offer_id=f"{timer.contact_id}:offer", **timer.offer)
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
    )
