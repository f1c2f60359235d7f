"""cds-hooks serve: run the service under gunicorn; `--reload` runs Flask's development server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "run the service (gunicorn; --reload for the development server)"


DEFAULT_THREADS = 4  # overlap FHIR fetches (up to DEADLINE_SECONDS) and slow clients


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # gunicorn_conf is imported only when serving: as a gunicorn config file it reads the
    # settings at import, and a bad CDS_* value must not break `cds-hooks --help`.
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per CPU core available, at least 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="threads per worker, for calls waiting on FHIR servers (default: %(default)s)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="development: Flask's server, restarted when the code changes (never in production)",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address although no JWT issuer is configured (docs/security.md)",
    )


def run(args: argparse.Namespace) -> int:
    from cds_hooks.app import create_app
    from cds_hooks.auth import BindRefused, check_bind_allowed
    from cds_hooks.gunicorn_conf import default_workers
    from cds_hooks.settings import load as load_settings

    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1 or args.threads < 1:
        print("cds-hooks: --workers and --threads must be at least 1", file=sys.stderr)
        return 2
    # Refuse an unsafe bind before anything is opened (the database, the knowledge).
    try:
        notice = check_bind_allowed(args.host, load_settings(), args.allow_unauthenticated)
    except BindRefused as refused:
        print(f"cds-hooks: {refused}", file=sys.stderr)
        return 2
    app = create_app()
    print(f"cds-hooks: {notice}", file=sys.stderr)
    where = _bind(args.host, args.port)
    print(f"cds-hooks: serving on http://{where}/cds-services", file=sys.stderr)
    if args.reload:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=True)
        return 0
    _gunicorn(app, args)
    return 0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _gunicorn(app: Any, args: argparse.Namespace) -> None:
    """gunicorn with cds_hooks.gunicorn_conf; the app built above is the preloaded one."""
    from gunicorn.app.base import BaseApplication

    from cds_hooks import gunicorn_conf

    options = {
        **gunicorn_conf.settings(app.config["SETTINGS"].fhir.deadline_seconds),
        "bind": [_bind(args.host, args.port)],
        "workers": args.workers,
        "threads": args.threads,
        "pre_fork": gunicorn_conf.pre_fork,
        "post_fork": gunicorn_conf.post_fork,
        "proc_name": "cds-hooks",
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in options.items():
                if name in self.cfg.settings:  # control_socket_disable is new in gunicorn 24
                    self.cfg.set(name, value)

        def load(self) -> Any:
            return app

    Server().run()
