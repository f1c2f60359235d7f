"""The `cds-hooks` command: serve the service, or evaluate a request file without a server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cds_hooks.errors import CdsError
from cds_hooks.services import SERVICES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-hooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    evaluate = commands.add_parser("evaluate", help="print the cards for a hook request file")
    evaluate.add_argument("request", type=Path, help="a CDS Hooks request body (JSON)")
    evaluate.add_argument("--now", default="", help="evaluate as of this ISO 8601 time")
    evaluate.add_argument("--allow-http-fhir", action="store_true",
                          help="let the request's fhirServer be plain http (local testing)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _evaluate(args)


def _serve(args: argparse.Namespace) -> int:
    from cds_hooks.app import create_app

    app = create_app()
    print(f"cds-hooks: serving on http://{args.host}:{args.port}/cds-services", file=sys.stderr)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cds_hooks.app import create_app
    from cds_hooks.pipeline import call_service
    from cds_hooks.protocol import parse_json

    config = {"NOW": args.now, "ALLOW_HTTP_FHIR": args.allow_http_fhir}
    app = create_app(config)
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


if __name__ == "__main__":
    raise SystemExit(main())
