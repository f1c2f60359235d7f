"""Subcommands of `cds-hooks`, one module each."""
