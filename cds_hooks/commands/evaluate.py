"""cds-hooks evaluate: print the cards for a hook request file, with no server running."""

from __future__ import annotations

import argparse
import json
import sys

from cds_hooks.commands import UsageError, build_app, iso_datetime, read_input

HELP = "print the cards for a hook request file (or - for standard input), no server needed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "request", help="a CDS Hooks request body (JSON file), or - to read standard input"
    )
    parser.add_argument(
        "--now",
        type=iso_datetime,
        help="evaluate as of this ISO 8601 time, e.g. 2026-11-21T12:00:00Z (default: now)",
    )
    parser.add_argument(
        "--allow-http-fhir",
        action="store_true",
        help="let the request's fhirServer be plain http (local testing)",
    )


def run(args: argparse.Namespace) -> int:
    from cds_hooks.errors import CdsError
    from cds_hooks.pipeline import call_service
    from cds_hooks.protocol import parse_json
    from cds_hooks.services import SERVICES

    raw = read_input(args.request)
    # An in-memory database: evaluating a file is a dry run that leaves no audit behind. Only
    # errors are logged: the server's start-up notices (authentication off...) do not apply here.
    app = build_app(
        {
            "NOW": args.now or "",
            "ALLOW_HTTP_FHIR": args.allow_http_fhir,
            "DATABASE_URL": "sqlite://",
            "LOG_LEVEL": "ERROR",
        }
    )
    try:
        body = parse_json(raw)
        hook = body.get("hook") if isinstance(body, dict) else None
        service = next((s for s in SERVICES if s.hook == hook), None)
        if service is None:
            hooks = ", ".join(s.hook for s in SERVICES)
            raise UsageError(f"{args.request}: no service for hook {hook!r}; use one of {hooks}")
        result = call_service(service, body, app.extensions["cds_hooks"])
    except CdsError as error:
        # The service's own answer to a request it cannot use: the JSON error, as over HTTP.
        print(json.dumps(error.to_dict(), indent=2), file=sys.stderr)
        return 1
    print(json.dumps(result.response, indent=2, ensure_ascii=False))
    return 0
