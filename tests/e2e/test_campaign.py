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
import yaml

from scripts import stack
from shared.auth import DEV_KEY
from tests.e2e.support import RunningStack, running_stack, service_logs
from tests.support.campaign_diff import explain
from tools.simulator import report
from tools.simulator.model import Params, book
from tools.simulator.system import SERVICES

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
    # by the variant that first contacted each account: few meet the fitted model's first
    assert {"champion", "early-plan"} <= set(figures["champion_challenger"]["variants"])
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


async def test_the_campaign_fits_a_model_and_runs_it_as_a_challenger(
    first: tuple[RunningStack, Path],
) -> None:
    running, out = first
    fitted = json.loads((out / "models.json").read_text())
    urls = running.endpoints.services
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        models = (await http.get(f"{urls['scheduler']}/v1/models")).json()
        assert [(m["version"], m["kind"], m["status"]) for m in models] == [
            (1, "hand-written", "published"),
            (fitted["model_version"], "fitted", "published"),
        ]
        version = fitted["strategy_version"]
        body = (
            await http.get(f"{urls['scheduler']}/v1/strategies/early-and-late/versions/{version}")
        ).json()
        challenger = next(v for v in body["variants"] if v["name"] == "fitted-model")
        assert challenger["model"] == fitted["model_version"]
        assert body["salt"] == str(version - 1)  # the earlier variants kept their accounts
        # an account treated by the challenger was scored by the fitted model
        accounts = json.loads((out / "accounts.json").read_text())
        figures = json.loads((out / "campaign.json").read_text())
        groups = figures["model_challenger"]["groups"]
        assert groups["fitted-model"]["accounts"] > 0
        assert groups["champion"]["accounts"] > 0
        scored = []
        for account_id in sorted(accounts)[:400]:
            decided = (
                await http.get(f"{urls['scheduler']}/v1/accounts/{account_id}/decisions")
            ).json()
            scored += [
                d["inputs"]
                for d in decided
                if d["kind"] == "segment" and d["inputs"].get("model_version")
            ]
        assert {i["model_version"] for i in scored} >= {1, fitted["model_version"]}
    judged = figures["models"]["judged"]["after_fit"]
    assert judged["fitted"]["decisions"] == judged["hand_written"]["decisions"] > 0
    assert figures["models"]["judged"]["contact_table"]


async def test_the_roll_rate_back_test_is_within_a_tolerance_derived_from_its_sample(
    first: tuple[RunningStack, Path],
) -> None:
    """The ledger forecasts each past 5-day period from the ones before it. Each period's
    error (the share of accounts forecast in the wrong bucket) stays within what its sample
    explains: per bucket, a count drawn as the forecast says has a variance at most its
    expected count (a sum of Bernoulli draws); the matrix's own estimation error, from at
    least as many earlier transitions as accounts at the origin, at most doubles it; accounts
    in buckets no earlier period saw cannot be forecast at all. Three sigma of that."""
    running, out = first
    run = json.loads((out / "run.json").read_text())
    periods = run["days"] // 5 - 1
    async with httpx.AsyncClient(headers=AUTH, timeout=60) as http:
        response = await http.get(
            f"{running.endpoints.services['ledger']}/v1/forecast/roll-rates",
            params={"step_days": 5, "periods": periods, "horizon_days": 30},
        )
    assert response.status_code == 200, response.text
    made = response.json()
    tests = made["back_test"]
    assert len(tests) >= periods - 2
    for test in tests:
        n = test["accounts"]
        assert n == sum(test["actual"].values()) > 0
        sigma = sum((2 * p) ** 0.5 for p in test["predicted"].values())
        tolerance = (3 * sigma / 2 + test["unseen"]) / n
        assert test["error"] <= tolerance, test
    assert made["expected_recovery"]["overdue"]  # as of now: what the overdue may bring back


@pytest.mark.timeout(900)
def test_the_same_seed_gives_the_same_figures_with_two_replicas_of_every_service(
    first: tuple[RunningStack, Path], tmp_path: Path
) -> None:
    _, out = first
    with running_stack(tmp_path / "stack", 32000, {"ARREARS_REPLICAS": "2"}) as again:
        second = play(again, tmp_path / "out")
        cfg = stack.StackConfig(state_dir=again.state_dir, replicas=2)
        for service in SERVICES:
            # both replicas lived through the campaign (none was replaced by `up`)
            names = cfg.processes(service)
            assert [n for n in names if stack.running_pid(cfg, n)] == [service, f"{service}-2"]
            assert (again.state_dir / "run" / f"{service}-2.pid").exists()
    parted = explain(out, tmp_path / "out", comparable)
    assert not parted, "the runs parted:\n" + "\n".join(parted)
    assert comparable(second) == comparable(json.loads((out / "campaign.json").read_text()))


def test_the_fit_command_rebuilds_the_campaigns_model_and_publishes_it(
    first: tuple[RunningStack, Path], tmp_path: Path
) -> None:
    """``python -m services.scheduler.models fit`` on the topics up to the campaign's fit
    instant writes the very model the campaign fitted; with --publish the scheduler lists it."""
    running, out = first
    fitted = json.loads((out / "models.json").read_text())
    scheduler = running.endpoints.services["scheduler"]
    for name in ("a.yaml", "b.yaml"):
        result = running.run(
            "-m", "services.scheduler.models", "fit", "--until", fitted["fitted_at"],
            "--version", str(fitted["model_version"]), "--out", str(tmp_path / name),
            "--bootstrap", running.endpoints.bootstrap,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "b.yaml").read_text()
    model = yaml.safe_load((tmp_path / "a.yaml").read_text())
    assert model == fitted["model"]
    result = running.run(
        "-m", "services.scheduler.models", "fit", "--out", str(tmp_path / "c.yaml"),
        "--bootstrap", running.endpoints.bootstrap, "--publish", scheduler,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["published"]
    listed = httpx.get(f"{scheduler}/v1/models", headers=AUTH).json()
    assert (printed["version"], "published") in [(m["version"], m["status"]) for m in listed]
    assert printed["held_out"]["decisions"] > 0
    # and both models judged on the same decisions after the campaign's fit
    result = running.run(
        "-m", "services.scheduler.models", "evaluate", "--model", str(tmp_path / "a.yaml"),
        "--model", "services/scheduler/data/propensity.yaml", "--since", fitted["fitted_at"],
        "--bootstrap", running.endpoints.bootstrap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    judged = json.loads(result.stdout)
    figures = json.loads((out / "campaign.json").read_text())["models"]["judged"]["after_fit"]
    assert judged["model 2"]["decisions"] == judged["model 1"]["decisions"] > 0
    assert judged["model 2"]["auc"] == figures["fitted"]["auc"]
    assert judged["model 1"]["auc"] == figures["hand_written"]["auc"]
