"""python -m tools.simulator run|report|reconcile (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from tools.simulator import reconcile, report
from tools.simulator.campaign import Campaign, write_book_index
from tools.simulator.figures import gather
from tools.simulator.model import PARAMS, Params
from tools.simulator.system import Endpoints, System


async def run(args: argparse.Namespace) -> int:
    params = Params.load(Path(args.params))
    out = Path(args.out)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    started = time.monotonic()
    async with System(Endpoints.from_env()) as system:
        wall = [s["service"] for s in await system.progress() if s["clock_mode"] != "controlled"]
        if wall:
            print(
                f"[simulator] {', '.join(wall)} run on the wall clock; a campaign needs "
                "ARREARS_CLOCK=controlled (`make down`, then `make up`).",
                file=sys.stderr,
            )
            return 4
        clock = await system.latest_clock()
        if clock is not None:
            print(
                f"[simulator] this system's clock is already at {clock.isoformat()}: a campaign "
                "ran here before. `make clean` (or `make down` and removing .stack) for a new one.",
                file=sys.stderr,
            )
            return 3
        campaign = Campaign(
            system, params, seed=args.seed, customers=args.customers, days=args.days, out=out
        )
        write_book_index(campaign, out / "book.json")
        stats = await campaign.run()
        elapsed = time.monotonic() - started
        (out / "run.json").write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "customers": args.customers,
                    "days": campaign.params.days,
                    "start": campaign.params.start.isoformat(),
                    "steps": stats.steps,
                    "payments_posted": stats.payments,
                    "webhooks": stats.webhooks,
                    "replies": stats.replies,
                    "sends_seen": stats.sends_seen,
                    "desk_items": stats.desk_items,
                    "quiet_checks": system.quiet_checks,
                    "wall_seconds": round(elapsed, 1),
                    "phase_seconds": {k: round(v, 1) for k, v in stats.seconds.items()},
                },
                indent=2,
            )
        )
        print(f"[simulator] campaign played in {elapsed:.0f}s; writing the report")
        await write_report(system, out)
    return 0


async def write_report(system: System, out: Path) -> None:
    figures, per_account = await gather(system, out)
    path = await asyncio.to_thread(report.write, out, figures, per_account)
    rows, humane = report.summary_rows(figures), report.humane_rows(figures)
    desk = report.desk_rows(figures)
    learned = report.model_rows(figures)
    width = max(len(k) for k, _ in rows + humane + desk + learned)
    print("\nDecember campaign")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\nHumane collection")
    for key, value in humane:
        print(f"  {key:<{width}}  {value}")
    if desk:
        print("\nThe desk: collectors beside the partner channels")
        for key, value in desk:
            print(f"  {key:<{width}}  {value}")
    if learned:
        print("\nLearning from the campaign")
        for key, value in learned:
            print(f"  {key:<{width}}  {value}")
        table = report.contact_table_rows(figures)
        if table:
            print("  contact table (" + ", ".join(report.CONTACT_HEAD) + "):")
            for row in table:
                print("    " + "  ".join(f"{v:<10}" for v in row).rstrip())
    print(f"\n  report: {path.resolve()}\n  figures: {(out / 'campaign.json').resolve()}")


async def reconcile_only(args: argparse.Namespace) -> int:
    async with System(Endpoints.from_env()) as system:
        findings = await reconcile.check(system, Path(args.out))
    result = findings.as_dict()
    (Path(args.out) / "reconcile.json").write_text(json.dumps(result, indent=1))
    for name, count in findings.checked.items():
        print(f"  checked {count:>7} {name}")
    for name, count in result["problem_counts"].items():
        print(f"  PROBLEM {count:>7} {name}: {', '.join(findings.problems[name][:5])}")
    print("reconciliation:", "ok" if findings.ok else "FAILED")
    return 0 if findings.ok else 1


async def report_only(args: argparse.Namespace) -> int:
    async with System(Endpoints.from_env()) as system:
        await write_report(system, Path(args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="play a campaign against the running system")
    run_cmd.add_argument("--customers", type=int, default=10_000)
    run_cmd.add_argument("--days", type=int, default=None, help="default: params.yaml (45)")
    run_cmd.add_argument("--seed", type=int, default=7)
    run_cmd.add_argument("--params", default=str(PARAMS))
    run_cmd.add_argument("--out", default=".stack/campaign")
    report_cmd = sub.add_parser("report", help="write the report of the campaign that ran")
    report_cmd.add_argument("--out", default=".stack/campaign")
    check_cmd = sub.add_parser("reconcile", help="check the campaign's trails end to end")
    check_cmd.add_argument("--out", default=".stack/campaign")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[simulator] %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "run":
        return asyncio.run(run(args))
    if args.command == "report":
        return asyncio.run(report_only(args))
    if args.command == "reconcile":
        return asyncio.run(reconcile_only(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
