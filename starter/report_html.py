"""``python -m starter report --html FILE``: the report as one self-contained page.

No network: the charts are matplotlib figures written as inline SVG, the style sheet is inline,
so the file can be mailed, archived or opened from a share as it is.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starter.report import Report, duration

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# A calm palette that prints well and that colour-blind readers can tell apart (Okabe-Ito).
INK = "#1f2933"
MUTED = "#66788a"
GRID = "#e4e7eb"
COLOURS = ("#0072B2", "#56B4E9", "#009E73", "#E69F00", "#D55E00", "#CC79A7", "#F0E442")

_CSS = """
:root { --ink: #1f2933; --muted: #66788a; --line: #e4e7eb; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f5f7fa; }
header { background: #102a43; color: #fff; padding: 24px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 0; color: #bcccdc; }
main { padding: 24px 40px 40px; max-width: 1280px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 16px;
         margin-bottom: 24px; }
.card { background: #fff; border-radius: 10px; padding: 16px 18px;
        box-shadow: 0 1px 3px rgba(16, 42, 67, .12); }
.card .value { font-size: 30px; font-weight: 650; color: var(--accent); }
.card .label { color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 20px; }
section { background: #fff; border-radius: 10px; padding: 18px 20px;
          box-shadow: 0 1px 3px rgba(16, 42, 67, .12); }
section h2 { font-size: 16px; margin: 0 0 2px; font-weight: 600; }
section .note { color: var(--muted); font-size: 12.5px; margin: 0 0 10px; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
"""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are only written out
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 11.5,
            "axes.edgecolor": GRID,
            "axes.labelcolor": MUTED,
            "axes.titlecolor": INK,
            "xtick.color": MUTED,
            "ytick.color": INK,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": GRID,
            "svg.fonttype": "none",  # text stays text: sharp, searchable, small
            "svg.hashsalt": "report",  # stable ids: the same report gives the same file
        }
    )
    return plt


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue and DOCTYPE: inline in HTML


def _empty(ax: Any, text: str = "nothing in this period") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _open_by_status(plt: Any, report: Report) -> str:
    rows = list(reversed(report.by_status))
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * max(len(rows), 3) + 0.8))
    if rows:
        bars = ax.barh([r.key for r in rows], [r.count for r in rows], color=COLOURS[0])
        ax.bar_label(bars, padding=3, color=INK, fontsize=9)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("open cases")
    else:
        _empty(ax, "no open cases")
    return _svg(fig)


def _backlog(plt: Any, report: Report) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    if report.backlog:
        days = [p.day for p in report.backlog]
        values = [p.open for p in report.backlog]
        ax.fill_between(days, values, color=COLOURS[1], alpha=0.35, step="post")
        ax.step(days, values, where="post", color=COLOURS[0], linewidth=2)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"open cases (end of {report.backlog_step})")
        fig.autofmt_xdate()
    else:
        _empty(ax)
    return _svg(fig)


def _in_status(plt: Any, report: Report) -> str:
    rows = list(reversed(report.age))
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * max(len(rows), 3) + 1.2))
    if rows:
        left = [0] * len(rows)
        names = [r.status for r in rows]
        for colour, bucket in zip(COLOURS, report.age_buckets, strict=False):
            values = [r.in_status[bucket] for r in rows]
            ax.barh(names, values, left=left, color=colour, label=bucket)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.legend(
            title="in the status for",
            ncols=len(report.age_buckets),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            frameon=False,
            fontsize=8.5,
            title_fontsize=8.5,
        )
        ax.grid(axis="y", visible=False)
    else:
        _empty(ax, "no open cases")
    return _svg(fig)


def _stays(plt: Any, report: Report) -> str:
    rows = list(reversed(report.stays))
    fig, ax = plt.subplots(figsize=(6.4, 0.36 * max(len(rows), 3) + 1.0))
    if rows:
        names = [r.status for r in rows]
        y = range(len(rows))
        ax.barh(
            [i + 0.2 for i in y],
            [r.p90_s / 86_400 for r in rows],
            0.4,
            color=COLOURS[3],
            label="p90",
        )
        ax.barh(
            [i - 0.2 for i in y],
            [r.median_s / 86_400 for r in rows],
            0.4,
            color=COLOURS[0],
            label="median",
        )
        ax.set_yticks(list(y), names)
        ax.set_xlabel("days in the status")
        ax.legend(frameon=False, loc="lower right")
        ax.grid(axis="y", visible=False)
    else:
        _empty(ax, "no stay ended in this period")
    return _svg(fig)


def _deadlines(plt: Any, report: Report) -> str:
    rows = [r for r in report.deadlines if None not in r.within.values()]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    windows = sorted({d for r in rows for d in r.within})
    width = 0.8 / max(len(windows), 1)
    for index, days in enumerate(windows):
        xs = [i + (index - (len(windows) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(
            xs,
            [r.within[days] or 0 for r in rows],
            width,
            color=COLOURS[index],
            label=f"next {days} days",
        )
        ax.bar_label(bars, padding=2, fontsize=8.5, color=INK)
    ax.set_xticks(range(len(rows)), [r.kind.replace("_", " ") for r in rows], rotation=20)
    ax.legend(frameon=False)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("cases")
    return _svg(fig)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int]) -> str:
    def cell(tag: str, index: int, value: Any) -> str:
        cls = ' class="n"' if index in numeric else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{note_html}{body}</section>"


def _card(value: str, label: str) -> str:
    return (
        f'<div class="card"><div class="value">{html.escape(value)}</div>'
        f'<div class="label">{html.escape(label)}</div></div>'
    )


def render(report: Report) -> str:
    """The page, as one string of HTML."""
    plt = _pyplot()
    try:
        charts = {
            "status": _open_by_status(plt, report),
            "backlog": _backlog(plt, report),
            "in_status": _in_status(plt, report),
            "stays": _stays(plt, report),
            "deadlines": _deadlines(plt, report),
        }
    finally:
        plt.close("all")
    flow, emails = report.flow, report.emails
    period = f"{report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}"
    rate = "—" if flow.reopen_rate is None else f"{flow.reopen_rate:.0%}"
    due_week = sum((r.within.get(7) or 0) for r in report.deadlines if r.kind != "work_plan_review")
    cards = "".join(
        [
            _card(f"{report.open_total:,}", "open cases"),
            _card(f"{due_week:,}", "deadlines in the next 7 days"),
            _card(rate, f"reopened from Closing ({flow.reopened} of {flow.left_closing})"),
            _card(f"{flow.closed_by_timer:,}", "closed by the timer"),
            _card(f"{flow.closed_by_person:,}", "closed by a person"),
            _card(
                f"{emails.waiting:,}" if emails.undelivered is None else f"{emails.undelivered:,}",
                "emails waiting" if emails.undelivered is None else "emails undelivered",
            ),
        ]
    )
    institutions = [(c.key, c.count) for c in report.by_institution]
    if report.institutions_other:
        institutions.append(("all others", report.institutions_other))
    stays_table = _table(
        ("status", "stays", "median", "p90"),
        ((r.status, f"{r.stays:,}", duration(r.median_s), duration(r.p90_s)) for r in report.stays),
        {1, 2, 3},
    )
    deadline_table = _table(
        ("deadline", "status", *(f"next {d} d" for d in (7, 30))),
        (
            (r.kind, r.status, *("n/a" if v is None else f"{v:,}" for v in r.within.values()))
            for r in report.deadlines
        ),
        {2, 3},
    )
    notes = [n for n in (emails.note, report.rejected.note) if n]
    mail_rows = [
        ("created", emails.created),
        ("sent", emails.sent),
        ("waiting", emails.waiting),
        ("waiting after a refused attempt", emails.failed_attempts),
        ("undelivered", "n/a" if emails.undelivered is None else emails.undelivered),
        ("rejected events", "n/a" if report.rejected.count is None else report.rejected.count),
    ]
    blocks = [
        _section("Open cases by status", f"<figure>{charts['status']}</figure>"),
        _section(
            "Backlog over time",
            f"<figure>{charts['backlog']}</figure>",
            f"open cases at the end of each {report.backlog_step}, {period}",
        ),
        _section(
            "Time in the current status",
            f"<figure>{charts['in_status']}</figure>",
            "open cases by how long they have been in their status",
        ),
        _section(
            "Time spent in each status",
            f"<figure>{charts['stays']}</figure>{stays_table}",
            f"stays that ended {period}",
        ),
        _section(
            "Deadlines ahead",
            f"<figure>{charts['deadlines']}</figure>{deadline_table}",
            report.deadline_note,
        ),
        _section(
            "Owner tier and institutions",
            _table(("owner tier", "open"), ((c.key, c.count) for c in report.by_owner_tier), {1})
            + "<br>"
            + _table(("institution", "open"), institutions, {1}),
        ),
        _section(
            "Emails and rejected events", _table(("", "count"), mail_rows, {1}), "; ".join(notes)
        ),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Support cases report · {html.escape(period)}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>Support cases</h1>
<p>{html.escape(period)} · generated {report.generated_at:%Y-%m-%d %H:%M} UTC ·
{html.escape(report.store)}</p></header>
<main>
<div class="cards">{cards}</div>
<div class="grid">{"".join(blocks)}</div>
<footer>python -m starter report --html · the case store's figures; times in UTC</footer>
</main></body></html>
"""
