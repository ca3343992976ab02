"""Topic names from the design contract, and the dead-letter twin of each."""

from __future__ import annotations

CORE_BANKING = "core-banking.events"
LEDGER = "ledger.events"
SCHEDULER = "scheduler.events"
NOTIFIER = "notifier.events"
BUREAU = "bureau.events"
CLOCK = "system.clock"

DOMAIN_TOPICS: tuple[str, ...] = (CORE_BANKING, LEDGER, SCHEDULER, NOTIFIER, BUREAU)
ALL_TOPICS: tuple[str, ...] = (*DOMAIN_TOPICS, CLOCK)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def partitions_for(topic: str, default: int) -> int:
    # The clock is one totally ordered stream: several partitions would let time run backwards.
    return 1 if topic in (CLOCK, dlq(CLOCK)) else default
