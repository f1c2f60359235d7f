"""cds-hooks report: per rule, cards shown, accepted, overridden, override reasons and rate."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime, timedelta

from cds_hooks.commands import UsageError, setting_problem

HELP = "per-rule card outcomes (shown, accepted, overridden, reasons) over a date range"
FORMATS = ("text", "csv", "json", "html")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    today = datetime.now(UTC).date()
    parser.add_argument(
        "--from",
        dest="start",
        type=day,
        default=(today - timedelta(days=30)).isoformat(),
        help="first day, YYYY-MM-DD (UTC; default 30 days ago)",
    )
    parser.add_argument(
        "--to",
        dest="end",
        type=day,
        default=today.isoformat(),
        help="last day, inclusive (default today)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default), csv, json, or html (one page with charts: > report.html)",
    )
    parser.add_argument(
        "--data-dir", help="the service's data folder (default: CDS_DATA_DIR, else var)"
    )
    parser.add_argument(
        "--database-url", help="read this database instead (default: CDS_DATABASE_URL)"
    )


def parse_day(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def day(text: str) -> str:
    """argparse type: a calendar day, YYYY-MM-DD."""
    try:
        parse_day(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day; write YYYY-MM-DD") from None
    return text


def run(args: argparse.Namespace) -> int:
    from cds_hooks import settings
    from cds_hooks.store import open_store

    start, last = parse_day(args.start), parse_day(args.end)
    if last < start:
        raise UsageError(f"--to {args.end} is before --from {args.start}; swap them")
    given = {"DATA_DIR": args.data_dir, "DATABASE_URL": args.database_url}
    try:
        store = open_store(settings.load({k: v for k, v in given.items() if v}).store)
    except ValueError as error:  # a bad CDS_* setting or --database-url
        raise setting_problem(error) from error
    try:
        report = store.report(start, last + timedelta(days=1))
        if args.format == "html":
            page = _html(store, report)
    finally:
        store.close()
    if report.truncated and args.format != "text":
        print(f"cds-hooks report: {_window(report)}", file=sys.stderr)
    if args.format == "html":
        sys.stdout.write(page + "\n")
    elif args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif args.format == "csv":
        _csv(report)
    else:
        _text(report)
    return 0


def _html(store, report) -> str:
    """The self-contained HTML page: the weeks are the same report over each week's days."""
    from cds_hooks.commands import report_html
    from cds_hooks.store.reports import most_overridden

    weeks = [
        report_html.Week(a, b, store.report(a, b))
        for a, b in report_html.week_bounds(report.start, report.end)
    ]
    top = most_overridden(store.engine, report.start, report.end)
    return report_html.render(report, weeks, top, datetime.now(UTC))


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _reasons(reasons: dict[str, int]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in reasons.items())


def _window(report) -> str:
    """What the audit still holds (AUDIT_RETENTION_DAYS), and whether the range starts before."""
    kept = f"the audit keeps {report.retention_days} days (since {report.kept_since.date()})"
    if report.truncated:
        return f"{kept}; days before that are past retention and not counted"
    return kept


def _text(report) -> None:
    print(f"Card outcomes {report.start.date()} to {(report.end - timedelta(days=1)).date()} (UTC)")
    if report.kept_since is not None:
        print(_window(report)[0].upper() + _window(report)[1:])
    header = ("rule", "shown", "accepted", "overridden", "no feedback", "override rate")
    rows = [
        (
            r.rule_id,
            r.shown,
            r.accepted,
            r.overridden,
            r.no_feedback,
            _rate(r.override_rate),
        )
        for r in report.rules
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(x).rjust(w) for x, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))
    if not rows:
        print("(no cards in this range)")
    for r in report.rules:
        if r.reasons:
            print(f"{r.rule_id} override reasons: {_reasons(dict(r.reasons.most_common()))}")
        if r.suppressed:
            print(f"{r.rule_id}: {r.suppressed} repeat card(s) suppressed")
    if report.unknown_card_feedback:
        print(f"feedback for unknown card uuids: {report.unknown_card_feedback}")
    if report.other_caller_feedback:
        print(
            f"feedback from another client than the card's recipient (not counted): "
            f"{report.other_caller_feedback}"
        )


def _csv(report) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(
        [
            "rule",
            "shown",
            "suppressed",
            "accepted",
            "overridden",
            "no_feedback",
            "override_rate",
            "override_reasons",
        ]
    )
    for r in report.rules:
        rate = r.override_rate
        out.writerow(
            [
                r.rule_id,
                r.shown,
                r.suppressed,
                r.accepted,
                r.overridden,
                r.no_feedback,
                "" if rate is None else f"{rate:.4f}",
                _reasons(dict(r.reasons.most_common())),
            ]
        )
