"""The campaign report: one self-contained HTML file (charts drawn by matplotlib offline and
embedded as PNG) and the same figures as JSON."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tools.simulator.figures import BUCKETS

CHANNELS = ["sms", "email", "voice", "letter", "field_visit"]
COLOURS = {
    "sms": "#4e79a7",
    "email": "#f28e2b",
    "voice": "#e15759",
    "letter": "#76b7b2",
    "field_visit": "#59a14f",
}


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    # no timestamp in the file: the same figures draw the same bytes
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _day_axis(ax: Any, days: Sequence[str]) -> list[int]:
    """Days as positions on a calendar axis (gaps kept), labelled every other day; matplotlib
    would otherwise guess at date-like strings, and say so on stderr."""
    if not days:
        return []
    first = date.fromisoformat(days[0])
    xs = [(date.fromisoformat(d) - first).days for d in days]
    ticks = list(range(0, xs[-1] + 1, 2))
    ax.set_xticks(ticks, [(first + timedelta(days=t)).strftime("%m-%d") for t in ticks])
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    return xs


def contacts_chart(figures: Mapping[str, Any]) -> str:
    by_day = figures["contacts"]["by_day_and_channel"]
    days = sorted(by_day)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    xs = _day_axis(ax, days)
    bottom = [0] * len(days)
    for channel in CHANNELS:
        values = [by_day[d].get(channel, 0) for d in days]
        if any(values):
            ax.bar(
                xs,
                values,
                bottom=bottom,
                label=channel,
                color=COLOURS[channel],
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title("Contacts sent by channel and day")
    ax.set_ylabel("contacts")
    ax.legend(ncol=5, fontsize=8)
    return _png(fig)


def rules_chart(figures: Mapping[str, Any]) -> str:
    d = figures["decisions"]
    rows = [(f"suppressed: {k}", v) for k, v in d["suppressed_by_rule"].items()]
    rows += [(f"deferred: {k}", v) for k, v in d["deferred_by_rule"].items()]
    rows.sort(key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(9, max(2.0, 0.3 * len(rows) + 1)))
    ax.barh(
        [r[0] for r in rows],
        [r[1] for r in rows],
        color=["#e15759" if r[0].startswith("suppressed") else "#bab0ac" for r in rows],
    )
    ax.set_title("Suppressions and deferrals by rule id")
    ax.set_xlabel("decisions")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def roll_chart(figures: Mapping[str, Any]) -> str:
    rates = figures["delinquency"]["roll_rates"]
    origins = [b for b in BUCKETS if b in rates]
    matrix = [
        [rates[o]["to"].get(t, 0) / max(1, rates[o]["accounts"]) for t in BUCKETS] for o in origins
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(origins) + 1.5))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(BUCKETS)), BUCKETS, fontsize=8)
    ax.set_yticks(
        range(len(origins)), [f"{o} ({rates[o]['accounts']})" for o in origins], fontsize=8
    )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                ax.text(
                    j,
                    i,
                    f"{value:.0%}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    ax.set_xlabel("bucket at the end of the campaign")
    ax.set_ylabel("bucket after the first day")
    ax.set_title("Roll rates between buckets")
    return _png(fig)


def recovery_chart(figures: Mapping[str, Any]) -> str:
    series = figures["recovery"]["cumulative_by_day"]
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(11, 3.2), squeeze=False)
    for ax, (currency, points) in zip(axes[0], sorted(series.items()), strict=False):
        xs = _day_axis(ax, [p[0] for p in points])
        ax.plot(xs, [float(p[1]) for p in points], color="#59a14f")
        ax.set_title(f"Amount recovered, cumulative ({currency})")
    return _png(fig)


def outcomes_chart(figures: Mapping[str, Any]) -> str:
    p, pl = figures["promises"], figures["plans"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    left.bar(
        ["made", "kept", "broken", "open"],
        [p["made"], p["kept"], p["broken"], p["open"]],
        color=["#4e79a7", "#59a14f", "#e15759", "#bab0ac"],
    )
    left.set_title("Promises to pay")
    right.bar(
        ["agreed", "kept so far", "completed", "broken"],
        [pl["agreed"], pl["kept"], pl["completed"], pl["broken"]],
        color=["#4e79a7", "#76b7b2", "#59a14f", "#e15759"],
    )
    right.set_title("Plans")
    return _png(fig)


def variants_chart(figures: Mapping[str, Any]) -> str:
    variants = figures["champion_challenger"]["variants"]
    names = list(variants)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for ax, key, title in (
        (axes[0], "cure_rate", "Cure rate"),
        (axes[1], "recovery_rate", "Recovery rate"),
    ):
        values = [variants[n][key] for n in names]
        errors = [
            [v - variants[n][f"{key}_ci95"][0] for n, v in zip(names, values, strict=True)],
            [variants[n][f"{key}_ci95"][1] - v for n, v in zip(names, values, strict=True)],
        ]
        ax.bar(names, values, yerr=errors, capsize=6, color=["#4e79a7", "#f28e2b"][: len(names)])
        ax.set_title(f"{title} (95% interval)")
        ax.set_ylim(0, 1)
    return _png(fig)


def bureau_chart(figures: Mapping[str, Any]) -> str:
    b = figures["bureau"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3))
    cycles = list(b["cycles"])
    for i, kind in enumerate(("submitted", "blocked", "corrected")):
        left.bar(
            [x + i * 0.27 for x in range(len(cycles))],
            [b["cycles"][c].get(kind, 0) for c in cycles],
            width=0.27,
            label=kind,
            color=["#59a14f", "#e15759", "#f28e2b"][i],
        )
    left.set_xticks([x + 0.27 for x in range(len(cycles))], cycles)
    left.legend(fontsize=8, loc="upper left")
    left.set_title("Bureau records by cycle")
    reasons = sorted(b["blocked_by_reason"].items(), key=lambda kv: kv[1])
    right.barh([r[0] for r in reasons], [r[1] for r in reasons], color="#e15759")
    right.set_title("Blocked, by gate")
    right.tick_params(axis="y", labelsize=8)
    fig.subplots_adjust(wspace=0.6)  # room for the gates' names between the two charts
    return _png(fig)


def _img(alt: str, png: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _rate(v: Mapping[str, Any], key: str) -> str:
    low, high = v[f"{key}_ci95"]
    return f"{v[key]:.1%} [{low:.1%}, {high:.1%}]"


def summary_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    run, book, dq = figures["run"], figures["book"], figures["delinquency"]
    c, b, cc = figures["contacts"], figures["bureau"], figures["champion_challenger"]
    rows: list[tuple[str, Any]] = [
        ("customers / accounts", f"{book['customers']} / {book['accounts']}"),
        (
            "simulated days, seed",
            f"{run.get('days')} from {run.get('start', '')[:10]}, seed {run.get('seed')}",
        ),
        ("delinquent after the first day", book["delinquent_at_start"]),
        ("payments missed (events)", dq["payments_missed"]),
        ("accounts delinquent during the campaign", dq["accounts_delinquent_during_campaign"]),
        ("cured by the end (cure rate)", f"{dq['cured_by_end']} ({dq['cure_rate']:.1%})"),
        (
            "contacts requested / sent / suppressed",
            f"{c['requested']} / {c['sent']} / {c['suppressed']}",
        ),
        ("opt-outs, disputes", f"{c['opt_outs']}, {c['disputes']}"),
        (
            "promises made / kept / broken",
            "{made} / {kept} / {broken}".format(**figures["promises"]),
        ),
        (
            "plans agreed / kept so far (completed) / broken",
            "{agreed} / {kept} ({completed}) / {broken}".format(**figures["plans"]),
        ),
        ("recovered", ", ".join(f"{v} {k}" for k, v in figures["recovery"]["by_currency"].items())),
        (
            "bureau submitted / blocked / corrected",
            f"{b['submitted']} / {b['blocked']} / {b['corrected']}",
        ),
    ]
    for name, v in cc["variants"].items():
        rows.append(
            (
                f"variant {name}",
                f"{v['accounts']} accounts, cure {_rate(v, 'cure_rate')}, "
                f"recovery {_rate(v, 'recovery_rate')}",
            )
        )
    comparison = cc.get("comparison")
    if comparison:
        low, high = comparison["recovery_rate_difference_ci95"]
        rows.append(
            (
                "challenger - champion recovery",
                f"{comparison['recovery_rate_difference']:+.1%} "
                f"[{low:+.1%}, {high:+.1%}]"
                + (" (significant)" if comparison["significant"] else " (not significant)"),
            )
        )
    dead = figures.get("dead_letters", {})
    rows.append(("dead letters", sum(dead.values())))
    if "wall_seconds" in run:
        rows.append(("wall time of the campaign", f"{run['wall_seconds']} s"))
    return rows


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


def desk_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Per collector (the desk's count) and per external partner channel: contacts,
    right-party rate, promise rate (of right-party contacts), kept rate, plans."""
    d = figures.get("desk")
    if not d:
        return []
    rows: list[tuple[str, Any]] = [("items worked at the desk", d["items"])]
    for c in d["collectors"]:
        settled = c["kept"] + c["broken"]
        rows.append(
            (
                f"collector {c['username']}",
                f"{c['contacts']} contacts, right party {_share(c['right_party'], c['contacts'])}, "
                f"promises {c['promises']} ({_share(c['promises'], c['right_party'])}), kept "
                f"{_share(c['kept'], settled)}, plans {c['plans']}, hardship {c['hardship']}",
            )
        )
    for channel, p in d["partners"].items():
        rows.append(
            (
                f"external partner, {channel}",
                f"{p.get('contacts', 0)} contacts, right party "
                f"{_share(p.get('right_party', 0), p.get('contacts', 0))}, promises "
                f"{p.get('promises', 0)} ({_share(p.get('promises', 0), p.get('right_party', 0))})"
                f", plans {p.get('plans', 0)}",
            )
        )
    return rows


def _auc(j: Mapping[str, Any]) -> str:
    if j.get("auc") is None:
        return f"n/a ({j.get('decisions', 0)} decisions, {j.get('payers', 0)} paid)"
    return (
        f"AUC {j['auc']:.3f} ± {1.96 * j['auc_se']:.3f}, Brier {j['brier']:.3f} "
        f"({j['decisions']} decisions, {j['payers']} paid)"
    )


def model_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The fitted model beside the hand-written one, its challenger against the champion, and
    the roll-rate forecast against what happened."""
    m = figures.get("models") or {}
    fit = m.get("fit")
    rows: list[tuple[str, Any]] = []
    if fit and fit.get("skipped"):
        rows.append(("model fit", f"skipped at {fit['fitted_at']}: {fit['skipped']}"))
    elif fit:
        training = fit.get("training") or {}
        rows.append(
            (
                "model fitted",
                f"version {fit['model_version']} at {fit['fitted_at']} on "
                f"{training.get('decisions')} decision points "
                f"({training.get('start', '')[:10]} to {training.get('held_out_from', '')[:10]}), "
                f"challenger {fit['challenger']} ({fit['weight']}% of traffic) in strategy "
                f"version {fit['strategy_version']}",
            )
        )
        rows.append(("  at the fit, held out: fitted", _auc(fit["held_out_at_fit"] or {})))
        rows.append(
            ("  at the fit, held out: hand-written", _auc(fit["hand_written_at_fit"] or {}))
        )
    judged = (m.get("judged") or {}).get("after_fit")
    if judged:
        rows.append(("after the fit: fitted model", _auc(judged["fitted"])))
        rows.append(("after the fit: hand-written model", _auc(judged["hand_written"])))
    c = figures.get("model_challenger")
    if c:
        for name, g in c["groups"].items():
            rows.append(
                (
                    f"  {name} (from strategy v{c['strategy_version']})",
                    f"{g['accounts']} accounts, cure {_rate(g, 'cure_rate')}, "
                    f"recovery {_rate(g, 'recovery_rate')}",
                )
            )
        lo, hi = c["recovery_rate_difference_ci95"]
        clo, chi = c["cure_rate_difference_ci95"]
        rows.append(
            (
                "  challenger minus champion",
                f"recovery {c['recovery_rate_difference']:+.1%} [{lo:+.1%}, {hi:+.1%}], "
                f"cure {c['cure_rate_difference']:+.1%} [{clo:+.1%}, {chi:+.1%}]"
                + (" (significant)" if c["significant"] else " (not significant)"),
            )
        )
    f = m.get("forecast")
    if f:
        actual = f.get("actual") or {}
        predicted = f["predicted"]
        moved = [b for b in predicted if predicted[b] >= 0.5 or actual.get(b)]
        rows.append(
            (
                f"roll-rate forecast from {f['as_of'][:10]}, {f['horizon_days']} days",
                ", ".join(f"{b} {predicted[b]:.0f} (was {actual.get(b, '?')})" for b in moved),
            )
        )
        tests = f.get("back_test") or []
        if tests:
            rows.append(
                (
                    "  back-test, one period ahead",
                    f"{len(tests)} periods of {f['step_days']} days, mean error "
                    f"{f['mean_error']:.1%} of accounts, each within its tolerance: "
                    + ("yes" if all(t["error"] <= t["tolerance"] for t in tests) else "no"),
                )
            )
    return rows


def contact_table_rows(figures: Mapping[str, Any]) -> list[list[str]]:
    """Segment, channel, local hour, contacts, reached, paid within the outcome window."""
    judged = (figures.get("models") or {}).get("judged") or {}
    return [
        [
            r["segment"],
            r["channel"],
            f"{r['hour']:02d}:00",
            str(r["contacts"]),
            f"{r['right_party_rate']:.0%}",
            f"{r['payment_rate']:.0%}",
        ]
        for r in judged.get("contact_table", [])
    ]


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


CONTACT_HEAD = ("segment", "channel", "local hour", "contacts", "reached", "paid")


def humane_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    h = figures.get("humane")
    if not h:
        return []
    r, hd, cb = h["reminders"], h["hardship"], h["callbacks"]
    rows: list[tuple[str, Any]] = [
        (
            "instalments due soon / reminders sent",
            f"{r['instalments_due_soon']} / {r['sent']} "
            + ", ".join(f"{k} {v}" for k, v in r["by_channel"].items()),
        )
    ]
    for variant, g in r["paid_by_due_date"].items():
        role = "reminded" if variant == r["reminded_variant"] else "control, no reminder"
        rows.append(
            (
                f"paid by the due date: {variant} ({role})",
                f"{g['paid_by_due_date']} of {g['instalments']}, {_rate(g, 'rate')}",
            )
        )
    if r["difference"]:
        d = r["difference"]
        low, high = d["ci95"]
        rows.append(
            (
                "reminded - control, paid by the due date",
                f"{d['reminded_minus_control']:+.1%} [{low:+.1%}, {high:+.1%}]"
                + (" (significant)" if d["significant"] else " (not significant)"),
            )
        )
    rows += [
        (
            "hardship cases (by source:reason)",
            f"{hd['cases']} ("
            + ", ".join(f"{k} {v}" for k, v in hd["by_source_and_reason"].items())
            + ")",
        ),
        ("hardship cured (cure rate)", f"{hd['cured']} ({_rate(hd, 'cure_rate')})"),
        (
            "hardship current or keeping a plan at the end",
            f"{hd['current_or_keeping_a_plan']} ({_rate(hd, 'recovering_rate')})",
        ),
        ("plans agreed under hardship", hd["plans_agreed_under_hardship"]),
        (
            "callbacks asked / calls placed / answered",
            f"{cb['requested']} / {cb['calls_placed']} / {cb['answered']} "
            f"({cb['kept_rate']:.1%} kept)",
        ),
        (
            "plans agreed by where (share on the page)",
            ", ".join(f"{k} {v}" for k, v in h["plans_by_source"].items())
            + f" ({h['plans_on_the_page_share']:.1%} on the page)",
        ),
    ]
    return rows


HUMANE_NOTE = (
    '<p class="note">Reminders: every instalment told of as due soon, by the variant its account '
    "is assigned to (the challenger sends no reminder: the control group); paid by the due "
    "date unless a payment.missed followed. Intervals: Wilson for rates, seeded bootstrap for "
    "the difference. A hardship case is cured when its account is current by the end; a "
    "hardship plan freezes days past due but leaves the arrears on the books until it is "
    "paid, so within a 45-day campaign most cases are recovering (keeping a plan), not yet "
    "cured.</p>"
)

RULES_NOTE = (
    '<p class="note">A deferral moves a contact to the next lawful window; a suppression drops '
    "it. Each bar is a rule id of the country's pack.</p>"
)
VARIANTS_NOTE = (
    '<p class="note">Per delinquent account assigned to a variant: cured by the end, and the '
    "share of its highest overdue amount recovered (capped at 100%). Intervals: Wilson for "
    "the cure rate, normal approximation for the recovery rate, seeded bootstrap for the "
    "difference.</p>"
)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } th, td { padding: 3px 10px; text-align: left; }
th { font-weight: 600; color: #444; } tr:nth-child(even) { background: #f6f6f6; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
"""


MODELS_NOTE = (
    "<p class=note>The model is fitted (scikit-learn, regularised logistic regression) on the "
    "decision points of the campaign's first weeks: a missed payment or a worse bucket, and "
    "whether at least what was overdue was paid within the outcome window. It runs as a "
    "challenger variant (the champion's treatments, scored by the fitted model) for the rest. "
    "'After the fit' judges both models on the same later decisions, which the fit never saw; "
    "± is 1.96 standard errors (Hanley and McNeil). Contact table: contacts whose outcome "
    "window closed, 'reached' a conversation for calls and visits, a delivery for messages, "
    "'paid' any payment within the window. The forecast is the ledger's "
    "(GET /v1/forecast/roll-rates).</p>"
)


def render(figures: Mapping[str, Any]) -> str:
    sections = [
        ("Summary", _table(summary_rows(figures))),
        (
            "Contacts",
            _img("contacts by channel and day", contacts_chart(figures)),
        ),
        (
            "Compliance: suppressions and deferrals",
            _img("suppressions and deferrals by rule", rules_chart(figures)) + RULES_NOTE,
        ),
        ("Humane collection", _table(humane_rows(figures)) + HUMANE_NOTE),
        ("The desk: collectors beside the partner channels", _table(desk_rows(figures))),
        ("Roll rates", _img("roll rates", roll_chart(figures))),
        (
            "Learning from the campaign: a fitted model, best channel and hour, the forecast",
            _table(model_rows(figures))
            + _grid(CONTACT_HEAD, contact_table_rows(figures))
            + MODELS_NOTE,
        ),
        (
            "Promises and plans",
            _img("promises and plans", outcomes_chart(figures)),
        ),
        (
            "Amount recovered",
            _img("recovered over time", recovery_chart(figures)),
        ),
        (
            "Champion against challenger",
            _img("champion and challenger", variants_chart(figures)) + VARIANTS_NOTE,
        ),
        (
            "Credit bureau",
            _img("bureau records", bureau_chart(figures)),
        ),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>Arrears: December campaign report</title>"
        f"<style>{CSS}</style></head><body><h1>Arrears: December campaign report</h1>"
        f"{body}<p class=note>Figures as JSON: campaign.json beside this file.</p></body></html>"
    )


def write(out: Path, figures: Mapping[str, Any], per_account: Mapping[str, Any]) -> Path:
    (out / "campaign.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    (out / "accounts.json").write_text(json.dumps(per_account, sort_keys=True))
    path = out / "report.html"
    path.write_text(render(figures))
    return path
