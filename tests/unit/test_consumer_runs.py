"""How a fetch is regrouped into same-type runs for batch handlers: longer runs, never a key's
events out of order."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from shared.consumer import runs_keeping_key_order
from shared.envelope import CloudEvent
from tests.support.factories import payment_posted

TEMPLATE = payment_posted(customer="C0")


def event(key: str, kind: str, n: int) -> CloudEvent:
    return dataclasses.replace(TEMPLATE, id=f"{key}-{n}", key=key, type=kind)


def test_each_customers_upsert_loan_payments_become_one_run_per_type() -> None:
    fetch = [
        event(f"C{c}", kind, n)
        for c in range(50)
        for n, kind in enumerate(["upsert", "loan", "payment", "payment", "payment"])
    ]
    runs = runs_keeping_key_order(fetch)
    assert [(run[0].type, len(run)) for run in runs] == [
        ("upsert", 50),
        ("loan", 50),
        ("payment", 150),
    ]


def test_a_step_back_in_type_order_starts_a_new_wave_for_that_key_only() -> None:
    fetch = [
        event("A", "payment", 0),
        event("A", "reversal", 1),
        event("A", "payment", 2),
        event("B", "payment", 3),
    ]
    runs = runs_keeping_key_order(fetch)
    assert [[e.id for e in run] for run in runs] == [["A-0", "B-3"], ["A-1"], ["A-2"]]


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["x", "y", "z", "w"])), max_size=60)
)
def test_runs_hold_every_event_once_and_keep_each_keys_order(
    spec: list[tuple[str, str]],
) -> None:
    fetch = [event(key, kind, n) for n, (key, kind) in enumerate(spec)]
    runs = runs_keeping_key_order(fetch)
    flat = [e for run in runs for e in run]
    assert sorted(e.id for e in flat) == sorted(e.id for e in fetch)
    assert all(len({e.type for e in run}) == 1 for run in runs)
    for key in {e.key for e in fetch}:
        assert [e.id for e in flat if e.key == key] == [e.id for e in fetch if e.key == key]
