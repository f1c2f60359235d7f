"""cds-hooks serve: run the service."""

from __future__ import annotations

import argparse
import sys

HELP = "run the service"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)


def run(args: argparse.Namespace) -> int:
    from cds_hooks.app import create_app

    app = create_app()
    print(f"cds-hooks: serving on http://{args.host}:{args.port}/cds-services", file=sys.stderr)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0
