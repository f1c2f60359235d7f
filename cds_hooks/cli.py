"""The `cds-hooks` command. Each subcommand lives in `cds_hooks/commands/<name>.py`.

A command module has `HELP`, `add_arguments(parser)` and `run(args) -> int`; list it in COMMANDS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cds_hooks.commands import call, evaluate, keys, load_fixtures, report, serve
from cds_hooks.config import SettingsError

COMMANDS = {
    "serve": serve,
    "report": report,
    "evaluate": evaluate,
    "keys": keys,
    "load-fixtures": load_fixtures,
    "call": call,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-hooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except SettingsError as error:  # a person's mistake in CDS_*: one line, not a traceback
        print(f"cds-hooks: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
