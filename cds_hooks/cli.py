"""The `cds-hooks` command. Each subcommand lives in `cds_hooks/commands/<name>.py`.

A command module has `HELP`, `add_arguments(parser)` and `run(args) -> int`; list it in COMMANDS.
A person's mistake is one line on stderr naming the problem and the fix, and exit status 2; the
traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from cds_hooks.commands import (
    UsageError,
    call,
    evaluate,
    keys,
    load_fixtures,
    report,
    serve,
    setting_problem,
)
from cds_hooks.config import SettingsError

COMMANDS = {
    "serve": serve,
    "evaluate": evaluate,
    "call": call,
    "load-fixtures": load_fixtures,
    "report": report,
    "keys": keys,
}
PACKAGE = "cds-hooks-antispasticity"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UsageError (one line) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")


def version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(
        prog="cds-hooks",
        description=__doc__.splitlines()[0],
        epilog="`cds-hooks COMMAND --help` shows a command's options. README: Command line.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="print the version"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error too"
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        # Accepted after the command too (`cds-hooks evaluate x.json --debug`).
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the Python traceback of an error too",
        )
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    debug = "--debug" in argv
    command = "cds-hooks"
    try:
        args, unknown = parser.parse_known_args(argv)
        if not args.command:
            if unknown:
                raise UsageError(f"unknown option {' '.join(unknown)}; see `cds-hooks --help`")
            parser.print_help()
            return 2
        command = f"cds-hooks {args.command}"
        if unknown:
            raise UsageError(f"unknown option {' '.join(unknown)}; see `{command} --help`")
        try:
            return COMMANDS[args.command].run(args)
        except SettingsError as error:  # a person's mistake in a CDS_* variable
            raise setting_problem(error) from error
    except UsageError as error:
        if debug:
            traceback.print_exc()
        message = str(error)
        prefix = "" if message.startswith("cds-hooks") else f"{command}: "
        print(f"{prefix}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # our bug, not the user's: still one line unless --debug
        if debug:
            raise
        print(
            f"{command}: unexpected error {type(error).__name__}: {error}; this is a bug, "
            "please report it with the output of the same command and --debug",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
