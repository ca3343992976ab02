"""Best channel and best hour: what a strategy step asks for when it names candidates
(``best_of``) or ``best_hour``, chosen from the contact table its variant's model carries (the
payment rate after contacts by segment, channel and local hour). The compliance engine still
decides every candidate: a choice only ranks what the pack allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.scheduler.domain.scoring import ContactRate
from shared.events import Channel


@dataclass(frozen=True)
class Ranked:
    channel: Channel
    payment_rate: float | None  # None: the table has no row for it
    contacts: int


def rank_channels(
    rates: Sequence[ContactRate], segment: str, candidates: Sequence[Channel]
) -> list[Ranked]:
    """The candidates by their payment rate for ``segment`` over all hours, best first; those
    the table does not know keep their order, after the known ones."""
    ranked = []
    for channel in candidates:
        rows = [r for r in rates if r.segment == segment and r.channel == channel]
        n = sum(r.contacts for r in rows)
        paid = sum(r.payment_rate * r.contacts for r in rows)
        ranked.append(Ranked(channel, round(paid / n, 4) if n else None, n))
    known = sorted(
        (r for r in ranked if r.payment_rate is not None),
        key=lambda r: -(r.payment_rate or 0.0),
    )
    return known + [r for r in ranked if r.payment_rate is None]


@dataclass(frozen=True)
class HourChoice:
    hour: int  # the local hour chosen
    payment_rate: float
    now_rate: float | None  # the rate at the current hour, if the table knows it


def best_hour(
    rates: Sequence[ContactRate], segment: str, channel: str, now_hour: int, last_hour: int
) -> HourChoice | None:
    """A later local hour of today's window (``now_hour`` < h <= ``last_hour``) with a strictly
    better payment rate than now, the best of them (the earliest of equals); None when now is
    as good as any later hour the table knows, or it knows none."""
    by_hour = {
        r.hour: r.payment_rate for r in rates if r.segment == segment and r.channel == channel
    }
    later = [(h, p) for h, p in by_hour.items() if now_hour < h <= last_hour]
    if not later:
        return None
    hour, rate = max(later, key=lambda hp: (hp[1], -hp[0]))
    now_rate = by_hour.get(now_hour)
    if now_rate is not None and now_rate >= rate:
        return None
    return HourChoice(hour, rate, now_rate)
