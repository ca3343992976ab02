"""``make bench``: every benchmark in one run, sized to finish in under 20 minutes on two cores.

Each benchmark runs in a process of its own (its own broker and PostgreSQL, started and
stopped by it), one after another so that none competes with another for the cores. The
results go to ``bench/results/<date>.json`` and the table in ``docs/performance.md`` is
rewritten from them. ``--only NAME`` runs some; the sizes are the suite's, the defaults of each
``python -m bench.<name>`` are larger (see their docstrings).

    python -m bench [--only pipeline --only ledger]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import RESULTS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# name -> arguments; the whole-pipeline benchmark first, as it is the one asked most about.
SUITE: dict[str, list[str]] = {
    "pipeline": ["--accounts", "100000", "--paced", "5000", "--book", "1000000"],
    "ledger": ["--accounts", "1000000", "--events", "100000"],
    "scheduler": ["--events", "20000", "--paced", "2000"],
    "notifier": ["--sends", "6000", "--webhooks", "3000"],
    "bureau": ["--accounts", "500000"],  # 1,000,000 alone: python -m bench.bureau
    "backbone": ["--events", "30000"],
    "decoding": ["--records", "50000"],
}


def run(name: str, args: list[str]) -> dict[str, Any]:
    print(f"\n=== bench.{name} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, check=True)
    seconds = round(time.perf_counter() - started, 1)
    result = json.loads((RESULTS / f"{name}.json").read_text())
    return {"args": args, "seconds": seconds, "result": result}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "—"


def rows(benches: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, measure, value, raw baseline in the same run, ratio) for the table."""
    out: list[tuple[str, str, str, str, str]] = []
    if p := benches.get("pipeline", {}).get("result"):
        n = fmt(p["accounts"])
        out += [
            (
                "pipeline",
                f"{n} `payment.missed` → scheduler → notifier → stand-in → `contact.attempted`",
                f"{fmt(p['pipeline_per_s'])} accounts/s",
                f"3 aiokafka consume→produce hops {fmt(p['raw_three_hop_per_s'])}/s",
                fmt(p["ratio_to_raw"]),
            ),
            (
                "",
                f"latency at half the saturating rate ({fmt(p['paced_rate_per_s'])}/s)",
                f"p50 {fmt(p['latency_p50_ms'])} ms, p99 {fmt(p['latency_p99_ms'])} ms "
                f"(to `contact.requested`: p50 {fmt(p['scheduler_hop_p50_ms'])} ms, "
                f"p99 {fmt(p['scheduler_hop_p99_ms'])} ms; then to `contact.attempted`: "
                f"p50 {fmt(p['notifier_hop_p50_ms'])} ms, p99 {fmt(p['notifier_hop_p99_ms'])} ms)",
                "—",
                "—",
            ),
            (
                "",
                f"peak RSS with {fmt(p['customers_in_each_database'])} customers in each database",
                f"scheduler {p['scheduler_peak_rss_mb']} MB, "
                f"notifier {p['notifier_peak_rss_mb']} MB",
                "—",
                "—",
            ),
        ]
    if r := benches.get("ledger", {}).get("result"):
        daily = " / ".join(fmt(s) for s in r["daily_evaluation_seconds"])
        out += [
            (
                "ledger",
                f"daily evaluation of {fmt(r['accounts'])} accounts (3 clock moves)",
                f"{daily} s",
                "—",
                "—",
            ),
            (
                "",
                f"catch-up evaluation of {fmt(r['accounts'])} never-evaluated accounts",
                f"{fmt(r['catch_up_evaluation_seconds'])} s",
                "—",
                "—",
            ),
            (
                "",
                f"ingest of {fmt(r['ingest_events'])} upstream events through Kafka",
                f"{fmt(r['ledger_ingest_per_s'])} events/s",
                f"fetch + decode + COPY + commit per fetch {fmt(r['raw_ingest_per_s'])}/s "
                f"(consume alone {fmt(r['raw_consume_per_s'])}/s; "
                f"COPY alone {fmt(r['raw_copy_rows_per_s'])} rows/s)",
                fmt(r["ratio_to_raw_ingest"]),
            ),
            (
                "",
                "decode + validate only (one process, no database)",
                f"{fmt(r['decode_only_per_s'])} events/s",
                f"aiokafka consume {fmt(r['raw_consume_per_s'])}/s",
                fmt(r["ratio_decode_only_to_consume"]),
            ),
            (
                "",
                f"peak RSS (evaluation of {fmt(r['accounts'])} / ingest)",
                f"{r['evaluation_peak_rss_mb']} / {r['ingest_peak_rss_mb']} MB",
                "—",
                "—",
            ),
        ]
    if s := benches.get("scheduler", {}).get("result"):
        out += [
            (
                "scheduler",
                f"{fmt(s['events'])} `payment.missed` → `contact.requested`",
                f"{fmt(s['scheduler_decisions_per_s'])} decisions/s",
                f"aiokafka consume→produce {fmt(s['raw_consume_produce_per_s'])}/s",
                fmt(s["ratio_to_raw"]),
            ),
            (
                "",
                f"latency at half the saturating rate ({fmt(s['paced_rate_per_s'])}/s)",
                f"p50 {fmt(s['latency_p50_ms'])} ms, p99 {fmt(s['latency_p99_ms'])} ms",
                "—",
                "—",
            ),
            ("", "peak RSS", f"{s['scheduler_peak_rss_mb']} MB", "—", "—"),
        ]
    if t := benches.get("notifier", {}).get("result"):
        out += [
            (
                "notifier",
                f"sends to the partner stand-in ({fmt(t['sends'])})",
                f"{fmt(t['notifier_sends_per_s'])}/s",
                f"same client → bare uvicorn {fmt(t['raw_httpx_uvicorn_per_s'])}/s",
                fmt(t["sends_ratio_to_raw"]),
            ),
            (
                "",
                f"signed webhooks ({fmt(t['webhooks'])}, {t['concurrency']} clients)",
                f"{fmt(t['notifier_webhooks_per_s'])}/s, p50 {fmt(t['webhook_p50_ms'])} ms, "
                f"p99 {fmt(t['webhook_p99_ms'])} ms",
                f"bare uvicorn {fmt(t['raw_webhooks_per_s'])}/s, p50 {fmt(t['raw_webhook_p50_ms'])}"
                f" ms, p99 {fmt(t['raw_webhook_p99_ms'])} ms",
                fmt(t["webhooks_ratio_to_raw"]),
            ),
            ("", "peak RSS", f"{t['notifier_peak_rss_mb']} MB", "—", "—"),
        ]
    if b := benches.get("bureau", {}).get("result"):
        out += [
            (
                "bureau",
                f"monthly cycle over {fmt(b['accounts'])} accounts (Metro 2 + CN JSON Lines)",
                f"{fmt(b['cycle_records_per_s'])} records/s ({fmt(b['cycle_seconds'])} s)",
                f"asyncpg cursor over the same rows, writing the files' "
                f"{fmt(b['raw_bytes_written'])} bytes, {fmt(b['raw_read_rows_per_s'])}/s",
                fmt(b["ratio_to_raw_read"]),
            ),
            (
                "",
                f"peak RSS ({fmt(b['accounts'])} accounts)",
                f"{b['cycle_peak_rss_mb']} MB",
                "—",
                "—",
            ),
        ]
    if k := benches.get("backbone", {}).get("result"):
        out.append(
            (
                "backbone",
                f"guaranteed path (outbox → Kafka → inbox), {fmt(k['events'])} events",
                f"{fmt(k['outbox_kafka_inbox_effects_per_s'])} effects/s",
                f"aiokafka produce→consume {fmt(k['raw_msgs_per_s'])}/s",
                fmt(k["ratio"]),
            )
        )
    if d := benches.get("decoding", {}).get("result"):
        base = d["json_loads_model_validate"]
        for label, key in (
            ("pydantic `model_validate_json`", "pydantic_model_validate_json"),
            ("msgspec structs (+ the checks msgspec cannot state)", "msgspec_structs"),
        ):
            out.append(
                (
                    "decoding" if key.startswith("pydantic") else "",
                    f"{label}, {fmt(d['records'])} hot-path payloads",
                    f"{fmt(d[key]['per_s'])}/s, {d[key]['cpu_us_per_record']} µs CPU each",
                    f"`json.loads` + `model_validate` (today) {fmt(base['per_s'])}/s, "
                    f"{base['cpu_us_per_record']} µs",
                    ratio(d[key]["per_s"], base["per_s"]),
                )
            )
    return out


def _ms(cost: dict[str, float] | None) -> str:
    if not cost:
        return "—"
    parts = ", ".join(f"{k} {v:.3f}" for k, v in cost.items() if k != "total")
    return f"**{cost['total']:.3f}** ({parts})"


def costs(benches: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(work, CPU ms per unit inside the system, raw baseline's, ratio of raw to system)."""
    out: list[tuple[str, str, str, str]] = []

    def row(work: str, cost: dict[str, float] | None, raw: dict[str, float] | None) -> None:
        if cost:
            times = f"{cost['total'] / raw['total']:.1f}×" if raw and raw["total"] else "—"
            out.append((work, _ms(cost), _ms(raw), times))

    if p := benches.get("pipeline", {}).get("result"):
        row("a contact (pipeline)", p.get("cpu_ms_per_event"), p.get("raw_cpu_ms_per_event"))
    if s := benches.get("scheduler", {}).get("result"):
        row("a decision (scheduler)", s.get("cpu_ms_per_event"), s.get("raw_cpu_ms_per_event"))
    if t := benches.get("notifier", {}).get("result"):
        row("a signed webhook (notifier)", t.get("webhook_cpu_ms"), t.get("raw_webhook_cpu_ms"))
    if r := benches.get("ledger", {}).get("result"):
        row(
            "an upstream event (ledger ingest)",
            r.get("ingest_cpu_ms_per_event"),
            r.get("raw_ingest_cpu_ms_per_event"),
        )
        if r.get("daily_evaluation_cpu_s"):
            row("an account in the daily evaluation (ledger)", evaluation_ms(r), None)
    if b := benches.get("bureau", {}).get("result"):
        row(
            "a bureau record (cycle)",
            b.get("cycle_cpu_ms_per_record"),
            b.get("raw_cpu_ms_per_record"),
        )
    return out


def evaluation_ms(ledger: dict[str, Any]) -> dict[str, float]:
    """CPU ms per account of the heaviest measured daily pass."""
    passes = ledger["daily_evaluation_cpu_s"]
    heaviest = max(passes, key=lambda c: sum(c.values()))
    per = {k: round(v * 1000 / ledger["accounts"], 4) for k, v in heaviest.items()}
    per["total"] = round(sum(per.values()), 4)
    return per


# The December peak a bank sizes for (issue 19): every account evaluated daily, 10% delinquent,
# three contacts a week each; each contact answered by one partner webhook; one upstream event
# per account a week (payments, changes); every account reported to the bureau monthly. Work
# must finish inside its window; cores are run at 60% at most.
PEAK = {
    "delinquent": 0.10,
    "contacts_per_week": 3,
    "webhooks_per_contact": 1,
    "upstream_per_account_per_day": 1 / 7,
    "evaluation_window_s": 3600,  # the nightly pass, one hour
    "contact_window_s": 12 * 3600,  # contact hours
    "ingest_window_s": 24 * 3600,
    "bureau_window_s": 4 * 3600,  # the monthly cycle's batch window
    "utilisation": 0.6,
}


def capacity(benches: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Cores for 1M, 10M and 100M accounts at the December peak, from the measured costs."""
    p = benches.get("pipeline", {}).get("result", {})
    t = benches.get("notifier", {}).get("result", {})
    r = benches.get("ledger", {}).get("result", {})
    b = benches.get("bureau", {}).get("result", {})
    if not (p.get("cpu_ms_per_event") and r.get("daily_evaluation_cpu_s") and b):
        return []
    contact = p["cpu_ms_per_event"]["total"]
    hook = t.get("webhook_cpu_ms", {}).get("total", 0.0)
    ingest = r["ingest_cpu_ms_per_event"]["total"]
    evaluate = evaluation_ms(r)["total"]
    report_ = b["cycle_cpu_ms_per_record"]["total"]
    out = []
    for accounts in (1_000_000, 10_000_000, 100_000_000):
        contacts = accounts * PEAK["delinquent"] * PEAK["contacts_per_week"] / 7
        work = {
            "evaluation": accounts * evaluate / 1000 / PEAK["evaluation_window_s"],
            "contacts": contacts * contact / 1000 / PEAK["contact_window_s"],
            "webhooks": contacts
            * PEAK["webhooks_per_contact"]
            * hook
            / 1000
            / PEAK["contact_window_s"],
            "ingest": accounts
            * PEAK["upstream_per_account_per_day"]
            * ingest
            / 1000
            / PEAK["ingest_window_s"],
            "bureau": accounts * report_ / 1000 / PEAK["bureau_window_s"],
        }
        total = sum(work.values()) / PEAK["utilisation"]
        # Two jobs do not spread over replicas: the evaluation is one set-based pass under an
        # advisory lock, the bureau cycle is owned by one replica. Their wall time, scaled
        # linearly from the measured book, is what bounds the book one database can hold.
        scale = accounts / r["accounts"]
        nightly = max(r["daily_evaluation_seconds"]) * scale
        cycle_hours = accounts / b["cycle_records_per_s"] / 3600
        out.append(
            (
                f"{accounts:,}",
                f"{contacts:,.0f}",
                *(f"{v:.2f}" for v in work.values()),
                f"**{total:.2g}**" if total < 1 else f"**{total:.1f}**",
                f"{nightly / 60:,.1f} min",
                f"{cycle_hours:,.1f} h",
            )
        )
    return out


def table(summary: dict[str, Any]) -> str:
    benches = summary["benches"]
    timings = ", ".join(f"{name} {bench['seconds']:.0f} s" for name, bench in benches.items())
    lines = [
        BEGIN,
        f"Run of {summary['date']} on {summary['machine']}, **{summary['cores']} cores**; "
        f"`make bench` took {summary['suite_seconds'] / 60:.1f} min "
        f"({timings}). "
        f"Source: `bench/results/{summary['date']}.json`.",
        "",
        "| benchmark | measure | value | raw baseline (same run) | ratio |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows(benches)),
    ]
    if spent := costs(benches):
        lines += [
            "",
            "CPU milliseconds of user + system time per unit of work, from `/proc` (each process "
            "named; PostgreSQL with its backends, the broker's JVM), beside the raw baseline's "
            "in the same run:",
            "",
            "| work | CPU ms, the system | CPU ms, raw baseline | system / raw |",
            "|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in spent),
        ]
    if plan := capacity(benches):
        lines += [
            "",
            "Cores for a December peak (every account evaluated in a one-hour nightly pass, 10% "
            "delinquent, 3 contacts each a week inside 12 contact hours, a webhook per contact, "
            "an upstream event per account a week, the monthly bureau cycle in a 4-hour "
            "window; all on one peak day; cores at 60% at most), from the costs above "
            "(`bench/__main__.py` `PEAK`):",
            "",
            "| accounts | contacts a day | evaluation | contacts | webhooks | ingest | bureau "
            "| cores | nightly pass, one process | bureau cycle, one replica |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(f"| {' | '.join(row)} |" for row in plan),
        ]
    lines.append(END)
    return "\n".join(lines)


def write_doc(summary: dict[str, Any]) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + table(summary) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SUITE))
    args = parser.parse_args()
    chosen = args.only or list(SUITE)
    started = time.perf_counter()
    benches = {name: run(name, SUITE[name]) for name in chosen}
    date = datetime.now(UTC).date().isoformat()  # the wall date names the file, by design
    seconds = round(time.perf_counter() - started, 1)
    summary: dict[str, Any] = {
        "date": date,
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "suite_seconds": seconds,
        "benches": benches,
    }
    out = RESULTS / f"{date}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.only is None:
        write_doc(summary)
    print(f"\nmake bench: {seconds / 60:.1f} min; {out}; table in {DOC}")
    print(table(summary))


if __name__ == "__main__":
    main()
