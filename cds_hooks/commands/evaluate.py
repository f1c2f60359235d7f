"""cds-hooks evaluate: print the cards for a hook request file, with no server running."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "print the cards for a hook request file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request", type=Path, help="a CDS Hooks request body (JSON)")
    parser.add_argument("--now", default="", help="evaluate as of this ISO 8601 time")
    parser.add_argument(
        "--allow-http-fhir",
        action="store_true",
        help="let the request's fhirServer be plain http (local testing)",
    )


def run(args: argparse.Namespace) -> int:
    from cds_hooks.app import create_app
    from cds_hooks.errors import CdsError
    from cds_hooks.pipeline import call_service
    from cds_hooks.protocol import parse_json
    from cds_hooks.services import SERVICES

    # An in-memory database: evaluating a file is a dry run that leaves no audit behind.
    app = create_app(
        {"NOW": args.now, "ALLOW_HTTP_FHIR": args.allow_http_fhir, "DATABASE_URL": "sqlite://"}
    )
    try:
        body = parse_json(args.request.read_bytes())
        hook = body.get("hook") if isinstance(body, dict) else None
        service = next((s for s in SERVICES if s.hook == hook), None)
        if service is None:
            print(f"cds-hooks: no service for hook {hook!r}", file=sys.stderr)
            return 2
        result = call_service(service, body, app.extensions["cds_hooks"])
    except CdsError as error:
        print(json.dumps(error.to_dict(), indent=2), file=sys.stderr)
        return 1
    print(json.dumps(result.response, indent=2, ensure_ascii=False))
    return 0
