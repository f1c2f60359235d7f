"""`cds-hooks report --format html`: one self-contained page for a P&T or CDS governance meeting.

Inline CSS and SVG only (no script, no font, no image from elsewhere): the file can be mailed or
archived and opens the same anywhere. Per rule: cards shown / accepted / overridden per week and
the override rate by week with its least-squares trend; then the top override reasons and the
cards most often overridden. Every figure is also written as text (tables, <title>s).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from cds_hooks.store.reports import OverriddenCard, Report, RuleReport

COLORS = {"shown": "#8c959f", "accepted": "#1a7f37", "overridden": "#cf222e", "rate": "#8250df"}


@dataclass
class Week:
    start: datetime
    end: datetime
    report: Report

    def rule(self, rule_id: str) -> RuleReport:
        return next((r for r in self.report.rules if r.rule_id == rule_id), RuleReport(rule_id))


def week_bounds(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at each Monday 00:00 UTC: the weeks a committee reads."""
    bounds = []
    cursor = start
    while cursor < end:
        monday = (cursor - timedelta(days=cursor.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        stop = min(end, monday + timedelta(days=7))
        bounds.append((cursor, stop))
        cursor = stop
    return bounds


def trend(rates: list[float | None]) -> float | None:
    """Least-squares slope of the weekly override rates (per week), over weeks with feedback."""
    points = [(i, r) for i, r in enumerate(rates) if r is not None]
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else None


def trend_words(slope: float | None) -> str:
    if slope is None:
        return "no trend (feedback in fewer than 2 weeks)"
    points = slope * 100
    if abs(points) < 1:
        return f"steady ({points:+.1f} points a week)"
    return f"{'rising' if points > 0 else 'falling'} ({points:+.1f} points a week)"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


def weekly_bars(rule_id: str, weeks: list[Week]) -> str:
    """Grouped bars per week: shown, accepted, overridden."""
    width, height, left, bottom = 520, 170, 34, 30
    top = max([w.rule(rule_id).shown for w in weeks] + [1])
    slot = (width - left - 8) / max(len(weeks), 1)
    bar = min(18.0, slot / 4)
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 4}" y2="{height - bottom}" '
        'stroke="#d0d7de"/>',
        f'<text x="{left - 4}" y="14" text-anchor="end" class="axis">{top}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="axis">0</text>',
    ]
    for i, week in enumerate(weeks):
        counts = week.rule(rule_id)
        x0 = left + i * slot + (slot - 3 * bar) / 2
        for j, (name, value) in enumerate(
            (
                ("shown", counts.shown),
                ("accepted", counts.accepted),
                ("overridden", counts.overridden),
            )
        ):
            h = (height - bottom - 10) * value / top
            y = height - bottom - h
            body.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[name]}"><title>{escape(name)} {value}, week of '
                f"{week.start:%Y-%m-%d}</title></rect>"
            )
        body.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 14}" '
            f'text-anchor="middle" class="axis">{week.start:%b %d}</text>'
        )
    return _svg(width, height, f"{rule_id}: cards shown, accepted, overridden per week", body)


def rate_line(rule_id: str, weeks: list[Week]) -> str:
    """Override rate per week (0-100 %) with its least-squares trend line, dashed."""
    width, height, left, bottom = 300, 170, 34, 30
    rates = [w.rule(rule_id).override_rate for w in weeks]
    slot = (width - left - 8) / max(len(weeks), 1)
    span = height - bottom - 10

    def xy(i: float, rate: float) -> tuple[float, float]:
        return left + i * slot + slot / 2, height - bottom - span * rate

    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 4}" y2="{height - bottom}" '
        'stroke="#d0d7de"/>',
        f'<line x1="{left}" y1="{height - bottom - span}" x2="{width - 4}" '
        f'y2="{height - bottom - span}" stroke="#eaeef2"/>',
        f'<text x="{left - 4}" y="{height - bottom - span + 4}" text-anchor="end" '
        'class="axis">100%</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="axis">0%</text>',
    ]
    points = [xy(i, r) for i, r in enumerate(rates) if r is not None]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(
            f'<polyline points="{path}" fill="none" stroke="{COLORS["rate"]}" stroke-width="2"/>'
        )
    for i, rate in enumerate(rates):
        if rate is not None:
            x, y = xy(i, rate)
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{COLORS["rate"]}">'
                f"<title>{_pct(rate)} overridden, week of {weeks[i].start:%Y-%m-%d}</title>"
                "</circle>"
            )
    slope = trend(rates)
    if slope is not None:
        known = [(i, r) for i, r in enumerate(rates) if r is not None]
        mean_x = sum(i for i, _ in known) / len(known)
        mean_y = sum(r for _, r in known) / len(known)
        first, last = known[0][0], known[-1][0]
        (x1, y1), (x2, y2) = (
            xy(first, mean_y + slope * (first - mean_x)),
            xy(last, mean_y + slope * (last - mean_x)),
        )
        body.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="trend" '
            f'stroke="{COLORS["rate"]}" stroke-dasharray="5 4" stroke-opacity=".6"/>'
        )
    for i, week in enumerate(weeks):
        body.append(
            f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 14}" '
            f'text-anchor="middle" class="axis">{week.start:%b %d}</text>'
        )
    return _svg(width, height, f"{rule_id}: override rate per week, {trend_words(slope)}", body)


def hbars(title: str, rows: list[tuple[str, int]], color: str) -> str:
    """Horizontal bars with their labels and counts."""
    width, row_h, label_w = 720, 24, 420
    top = max([n for _, n in rows] + [1])
    body = []
    for i, (label, n) in enumerate(rows):
        y = i * row_h
        w = (width - label_w - 50) * n / top
        short = label if len(label) <= 64 else label[:61] + "..."
        body.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" class="label">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{color}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="label">{n}</text>'
        )
    return _svg(width, max(len(rows), 1) * row_h, title, body)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  margin: 24px auto; max-width: 1080px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
.muted { color: #57606a; font-size: 13px; }
.totals { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.total { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.total b { display: block; font-size: 22px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #eaeef2; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.rule { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; margin: 12px 0;
  break-inside: avoid; }
.charts { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-end; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
svg .axis { font-size: 10px; fill: #57606a; } svg .label { font-size: 12px; fill: #1f2328; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; padding: 6px 10px; border-radius: 4px; }
"""


def _legend() -> str:
    items = [("shown", "shown"), ("accepted", "accepted"), ("overridden", "overridden")]
    items.append(("rate", "override rate (dashed: trend)"))
    return (
        '<p class="legend">'
        + "".join(
            f'<span><i style="background:{COLORS[k]}"></i>{escape(v)}</span>' for k, v in items
        )
        + "</p>"
    )


def render(
    report: Report, weeks: list[Week], overridden: list[OverriddenCard], generated: datetime
) -> str:
    last_day = (report.end - timedelta(days=1)).date()
    shown = sum(r.shown for r in report.rules)
    accepted = sum(r.accepted for r in report.rules)
    overrides = sum(r.overridden for r in report.rules)
    suppressed = sum(r.suppressed for r in report.rules)
    acted = accepted + overrides
    parts: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Card outcomes {report.start.date()} to {last_day}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Antispasticity CDS: card outcomes {report.start.date()} to {last_day} (UTC)</h1>",
        f'<p class="muted">Generated {generated:%Y-%m-%d %H:%M} UTC by cds-hooks report. A card '
        "counts once, by its latest feedback. Override rate = overridden / (accepted + "
        "overridden); cards with no feedback are counted apart.</p>",
    ]
    if report.truncated and report.kept_since is not None:
        parts.append(
            f'<p class="warn">The audit keeps {report.retention_days} days (since '
            f"{report.kept_since.date()}): days before that are not counted.</p>"
        )
    totals = [
        ("cards shown", shown),
        ("accepted", accepted),
        ("overridden", overrides),
        ("override rate", _pct(overrides / acted if acted else None)),
        ("repeats held back", suppressed),
    ]
    parts.append(
        '<div class="totals">'
        + "".join(f'<div class="total"><b>{v}</b>{escape(k)}</div>' for k, v in totals)
        + "</div>"
    )
    parts.append("<h2>Per rule, week by week</h2>")
    if not report.rules:
        parts.append('<p class="muted">No cards in this range.</p>')
    else:
        parts.append(_legend())
    for rule in sorted(report.rules, key=lambda r: (-r.overridden, -r.shown, r.rule_id)):
        rates = [w.rule(rule.rule_id).override_rate for w in weeks]
        parts.append(f'<section class="rule" id="rule-{escape(rule.rule_id)}">')
        parts.append(
            f"<h3>{escape(rule.rule_id)}: {rule.shown} shown, {rule.accepted} accepted, "
            f"{rule.overridden} overridden, override rate {_pct(rule.override_rate)}, "
            f"{escape(trend_words(trend(rates)))}</h3>"
        )
        parts.append(
            '<div class="charts">'
            + weekly_bars(rule.rule_id, weeks)
            + rate_line(rule.rule_id, weeks)
            + "</div>"
        )
        parts.append(_week_table(rule.rule_id, weeks))
        parts.append("</section>")
    reasons: Counter[str] = Counter()
    for rule in report.rules:
        reasons.update(rule.reasons)
    parts.append("<h2>Top override reasons</h2>")
    if reasons:
        top = reasons.most_common(10)
        parts.append(hbars("Top override reasons", top, COLORS["overridden"]))
        parts.append(_table(("reason", "overrides"), [(r, str(n)) for r, n in top]))
    else:
        parts.append('<p class="muted">No overrides in this range.</p>')
    parts.append("<h2>Cards most often overridden</h2>")
    if overridden:
        rows = [(f"{c.rule_id}: {c.summary}", c.overridden) for c in overridden]
        parts.append(hbars("Cards most often overridden", rows, COLORS["overridden"]))
        parts.append(
            _table(
                ("rule", "card", "overrides"),
                [(c.rule_id, c.summary, str(c.overridden)) for c in overridden],
            )
        )
    else:
        parts.append('<p class="muted">No overrides in this range.</p>')
    if report.unknown_card_feedback or report.other_caller_feedback:
        parts.append(
            f'<p class="muted">Not counted: {report.unknown_card_feedback} feedback entries for '
            f"cards the audit never saw, {report.other_caller_feedback} from another client "
            "than the card's recipient.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _week_table(rule_id: str, weeks: list[Week]) -> str:
    rows = []
    for week in weeks:
        r = week.rule(rule_id)
        rows.append(
            (
                f"{week.start:%Y-%m-%d}",
                str(r.shown),
                str(r.accepted),
                str(r.overridden),
                _pct(r.override_rate),
            )
        )
    return _table(("week of", "shown", "accepted", "overridden", "override rate"), rows)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
