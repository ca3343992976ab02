"""Where two campaign runs of the same seed parted: the figures that differ, and the accounts and
sends behind them, in lines short enough for a CI log (pytest's own diff of two large dicts is
cut before it reaches the difference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def differences(expected: Any, got: Any, limit: int = 40) -> list[str]:
    """One line per leaf that differs: ``path: expected -> got``."""
    want, have = dict(_leaves(expected)), dict(_leaves(got))
    lines = [
        f"{path}: {want.get(path, '(absent)')} -> {have.get(path, '(absent)')}"
        for path in sorted(want.keys() | have.keys())
        if want.get(path, "(absent)") != have.get(path, "(absent)")
    ]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def _sends(out: Path) -> dict[str, str]:
    path = out / "sends-seen.json"
    if not path.exists():
        return {}
    return {
        s["contact_id"]: f"{s['account_id']} {s['template']} {s['channel']} {s['not_before']}"
        for s in json.loads(path.read_text())
    }


def explain(expected_out: Path, got_out: Path, comparable: Any) -> list[str]:
    """The figures that differ between two runs' output folders, then the accounts and the
    sends that differ (the trail to follow in the services' logs)."""

    def figures(out: Path) -> Any:
        return comparable(json.loads((out / "campaign.json").read_text()))

    lines = differences(figures(expected_out), figures(got_out))
    if not lines:
        return []
    accounts = [
        ("accounts.json", json.loads((o / "accounts.json").read_text()))
        for o in (expected_out, got_out)
        if (o / "accounts.json").exists()
    ]
    if len(accounts) == 2:
        lines += ["accounts:", *differences(accounts[0][1], accounts[1][1], limit=20)]
    want, have = _sends(expected_out), _sends(got_out)
    lines += ["sends only in the expected run:"]
    lines += [f"  {want[c]}" for c in sorted(want.keys() - have.keys())][:20]
    lines += ["sends only in this run:"]
    lines += [f"  {have[c]}" for c in sorted(have.keys() - want.keys())][:20]
    return lines
