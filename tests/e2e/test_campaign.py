"""The simulated campaign end to end: a small December on a fresh system, its report, its
reconciliation, the report against the services' own APIs, and the same seed twice."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import DEV_KEY
from tests.e2e.support import RunningStack, running_stack, service_logs
from tools.simulator import report
from tools.simulator.model import Params, book

pytestmark = pytest.mark.e2e

CAMPAIGN = ["--customers", "700", "--days", "36", "--seed", "11"]  # through the January cycle
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}


def play(running: RunningStack, out: Path) -> dict[str, Any]:
    result = running.run("-m", "tools.simulator", "run", "--out", str(out), *CAMPAIGN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures: dict[str, Any] = json.loads((out / "campaign.json").read_text())
    return figures


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, Path]]:
    base = tmp_path_factory.mktemp("campaign-1")
    with running_stack(base / "stack", 31000) as running:
        play(running, base / "out")
        yield running, base / "out"


def comparable(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures without what measures this machine rather than the campaign."""
    run = {k: v for k, v in figures["run"].items() if k in ("seed", "customers", "days", "start")}
    return figures | {"run": run}


@pytest.mark.timeout(600)
def test_the_campaign_leaves_every_trail_reconciled(first: tuple[RunningStack, Path]) -> None:
    running, out = first
    result = running.run("-m", "tools.simulator", "reconcile", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checked = json.loads((out / "reconcile.json").read_text())
    assert checked["ok"]
    figures = json.loads((out / "campaign.json").read_text())
    # the check looked at real work, not at an empty system
    assert checked["checked"]["contact requests"] == figures["contacts"]["requested"] > 100
    assert checked["checked"]["accounts with a missed instalment"] > 30
    assert checked["checked"]["sends at the partner"] == figures["contacts"]["sent"]


def test_the_report_is_one_html_file_with_its_charts_and_figures(
    first: tuple[RunningStack, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, out = first
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 7
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    figures = json.loads((out / "campaign.json").read_text())
    for section in (
        "contacts",
        "decisions",
        "delinquency",
        "promises",
        "plans",
        "recovery",
        "champion_challenger",
        "bureau",
    ):
        assert section in figures
    assert figures["contacts"]["sent"] > 0
    assert set(figures["champion_challenger"]["variants"]) == {"champion", "early-plan"}
    assert figures["decisions"]["deferred_by_rule"]  # the windows shaped the campaign
    assert sum(figures["dead_letters"].values()) == 0
    with caplog.at_level(logging.INFO, logger="matplotlib"):
        report.render(figures)
    assert not caplog.records  # e.g. matplotlib guessing that strings on an axis are dates


def test_no_personal_data_reaches_the_report_or_the_logs(first: tuple[RunningStack, Path]) -> None:
    running, out = first
    people = book(Params.load(), 11, 700)
    text = "".join(p.read_text() for p in out.glob("*.json") if p.name != "book.json")
    text += (out / "report.html").read_text() + service_logs(running.state_dir)
    for person in people:
        for value in (person.full_name, person.phone, person.national_id, person.email):
            if value:
                assert value not in text


@pytest.mark.timeout(300)
async def test_the_report_agrees_with_each_services_own_api(
    first: tuple[RunningStack, Path],
) -> None:
    running, out = first
    accounts: dict[str, dict[str, Any]] = json.loads((out / "accounts.json").read_text())
    figures = json.loads((out / "campaign.json").read_text())
    sample = random.Random(5).sample(sorted(accounts), 25)
    urls = running.endpoints.services
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:

        async def get(service: str, path: str) -> Any:
            response = await http.get(f"{urls[service]}{path}")
            assert response.status_code == 200, response.text
            return response.json()

        for account_id in sample:
            mine = accounts[account_id]
            ledger, contacts, decisions, reports = await asyncio.gather(
                get("ledger", f"/v1/accounts/{account_id}"),
                get("notifier", f"/v1/accounts/{account_id}/contacts"),
                get("scheduler", f"/v1/accounts/{account_id}/decisions"),
                get("bureau", f"/v1/accounts/{account_id}/reports"),
            )
            assert Decimal(ledger["overdue"]) == Decimal(mine["overdue"]), account_id
            assert ledger["bucket"] == mine["bucket"], account_id
            assert sum(1 for c in contacts if c["sent_at"]) == mine["sent"], account_id
            assert sum(1 for d in decisions if d["kind"] == "suppressed") == mine["suppressed"]
            assert (
                sorted(r["cycle_id"] for r in reports if r["kind"] == "submitted")
                == mine["bureau_submitted"]
            )
        # and the totals the bureau keeps per cycle
        for cycle, counts in figures["bureau"]["cycles"].items():
            summary = await get("bureau", f"/v1/cycles/{cycle}")
            kinds: dict[str, int] = {}
            for row in summary["counts"]:
                kinds[row["kind"]] = kinds.get(row["kind"], 0) + row["n"]
            assert kinds.get("submitted", 0) == counts.get("submitted", 0)
            assert kinds.get("blocked", 0) == counts.get("blocked", 0)
        # and the scheduler's decision report
        decided = await get("scheduler", "/v1/reports/decisions")
        assert (
            sum(r["count"] for r in decided if r["kind"] == "fired")
            == figures["decisions"]["fired"]
        )


@pytest.mark.timeout(900)
def test_the_same_seed_gives_the_same_figures(
    first: tuple[RunningStack, Path], tmp_path: Path
) -> None:
    _, out = first
    with running_stack(tmp_path / "stack", 32000) as again:
        second = play(again, tmp_path / "out")
    assert comparable(second) == comparable(json.loads((out / "campaign.json").read_text()))
