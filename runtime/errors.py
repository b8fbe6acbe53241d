"""One error type for everything a user can fix, and the CLI wrapper that prints it on one line."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input or set-up; the message says what to do."""


class Closeable:
    """A resource owner: `with obj:` calls `close()` on the way out; close() must be idempotent."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main`, turning a UserError (or Ctrl-C) into one line and exit code 2 (130).

    `--debug` (which every CLI's parser declares) shows the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return int(main(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """`--debug` on the parser and each of its subcommands, so it is accepted anywhere (run_cli reads it)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (unless it has none), and descriptions/examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or not action.help:
            return action.help or ""
        return super()._get_help_string(action) or ""


def examples(*lines: str) -> str:
    """An `examples:` epilog for a parser."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
