"""cds-hooks serve: run the service under gunicorn; `--reload` runs Flask's development server."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from cds_hooks.commands import UsageError, build_app, positive, setting_problem

if TYPE_CHECKING:
    from cds_hooks.settings import Settings

HELP = "run the service (gunicorn; --reload for the development server)"
DEFAULT_THREADS = 4  # overlap FHIR fetches (up to DEADLINE_SECONDS) and slow clients


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No import of gunicorn_conf here: `--help` must work whatever the CDS_* variables say.
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; another address needs AUTH_ISSUERS "
        "or --allow-unauthenticated)",
    )
    parser.add_argument(
        "--port", type=port_number, default=8080, help="TCP port (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=positive(int),
        help="worker processes (default: one per usable CPU, capped by the cgroup CPU quota)",
    )
    parser.add_argument(
        "--threads",
        type=positive(int),
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
    from cds_hooks.observability import multiprocess_metrics
    from cds_hooks.settings import load as load_settings

    # Refuse a bad setting, an unsafe bind or a busy port before anything is opened (the
    # database, the knowledge) or logged.
    try:
        notice = check_bind_allowed(args.host, load_settings(), args.allow_unauthenticated)
    except BindRefused as refused:
        raise UsageError(str(refused)) from None
    check_port(args.host, args.port)
    # gunicorn workers write their metrics to files in one folder, so that /metrics adds them
    # up: switched on before the app makes its metrics (not for the development server).
    with nullcontext() if args.reload else multiprocess_metrics():
        app = build_app()
        print(f"cds-hooks: {notice}", file=sys.stderr)
        where = f"http://{_bind(args.host, args.port)}/cds-services"
        if args.reload:
            print(f"cds-hooks: serving on {where} (development server)", file=sys.stderr)
            app.run(host=args.host, port=args.port, threaded=True, use_reloader=True)
            return 0
        _gunicorn(app, args, where)
    return 0


def check_port(host: str, port: int) -> None:
    """UsageError, before anything starts, when `host:port` cannot be listened on."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except (socket.gaierror, UnicodeError):
        raise UsageError(
            f"--host {host!r} is not an address or a known host name; give e.g. 127.0.0.1"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise UsageError(_bind_problem(host, port, error)) from None


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use; stop the program using it, or pick "
            f"another port (--port {port + 1}, or make serve PORT={port + 1})"
        )
    if error.errno == errno.EACCES:
        return f"port {port} needs administrator rights; pick a port above 1023 (--port 8080)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; use 127.0.0.1 or one of its addresses"
    return f"cannot listen on {host}:{port} ({error.strerror}); check --host and --port"


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _gunicorn(app: Any, args: argparse.Namespace, where: str) -> None:
    """gunicorn with cds_hooks.gunicorn_conf; the app built above is the preloaded one."""
    from gunicorn.app.base import BaseApplication

    try:
        from cds_hooks import gunicorn_conf
    except ValueError as error:  # it reads CDS_* variables when imported
        raise setting_problem(error) from error

    def when_ready(_server: Any) -> None:
        # Called by gunicorn once its sockets are bound: only now is the service reachable.
        print(f"cds-hooks: serving on {where}", file=sys.stderr, flush=True)

    options = {
        **gunicorn_conf.settings(app.config["SETTINGS"].fhir.deadline_seconds),
        "bind": [_bind(args.host, args.port)],
        "workers": args.workers or gunicorn_conf.default_workers(),
        "threads": args.threads,
        "on_starting": gunicorn_conf.bind_check(args.allow_unauthenticated, announce=False),
        "pre_fork": gunicorn_conf.pre_fork,
        "post_fork": gunicorn_conf.post_fork,
        "child_exit": gunicorn_conf.child_exit,  # /metrics: every worker's files, one folder
        "worker_exit": gunicorn_conf.worker_exit,  # the worker's queued audit written first
        "when_ready": when_ready,
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


# ---- the bind policy: one function, used by every launcher (this command, gunicorn_conf) -------


class BindRefused(ValueError):
    """Serving this address without authentication needs an explicit opt-in."""


def is_loopback(host: str) -> bool:
    """`localhost` or a literal loopback address; any other name may resolve anywhere."""
    from cds_hooks.auth import is_loopback_address

    return host.lower() == "localhost" or is_loopback_address(host)


def check_bind_allowed(host: str, settings: Settings, allow_unauthenticated: bool = False) -> str:
    """What to tell the operator about authentication, or BindRefused for an unsafe bind.

    Without issuers the service is open, so by default it may only listen on loopback; another
    address needs `--allow-unauthenticated` (or ALLOW_UNAUTHENTICATED=true in the config).
    """
    from cds_hooks.auth import accepted_algorithms, load_issuers

    issuers = load_issuers(settings.auth.auth_issuers)
    if issuers:
        return (
            f"client authentication ON ({len(issuers)} issuer(s), "
            f"{', '.join(accepted_algorithms(settings.auth.auth_algorithms))})"
        )
    if is_loopback(host):
        return (
            "client authentication OFF (no AUTH_ISSUERS configured): serving on loopback only; "
            "configure issuers to serve other addresses"
        )
    if allow_unauthenticated or settings.app.allow_unauthenticated:
        return (
            f"WARNING: client authentication OFF and serving on {host}: anyone who can reach "
            "this address can call the service (--allow-unauthenticated)"
        )
    raise BindRefused(
        f"refusing to serve {host} without client authentication: configure AUTH_ISSUERS, "
        "bind a loopback address (127.0.0.1), or pass --allow-unauthenticated"
    )


def check_gunicorn_binds(
    binds: list[str], settings: Settings, allow_unauthenticated: bool = False
) -> list[str]:
    """`check_bind_allowed` for each gunicorn bind (`host:port`, `[::1]:port`, `unix:`, `fd://`)."""
    from gunicorn.util import parse_address

    notices = []
    for bind in binds:
        address = parse_address(bind)
        if isinstance(address, str):  # a unix socket: reachable from this machine only
            host = "localhost"
        elif isinstance(address, int):  # an inherited socket: where it listens is unknown
            host = bind
        else:
            host = address[0]
        notices.append(check_bind_allowed(host, settings, allow_unauthenticated))
    return notices
