"""The ``xbeam`` command line.

Each sub-command lives in its own module under ``xbeam_bluesky.cli`` and exposes
``register(subparsers)``; heavy imports happen inside the command handlers so
``xbeam --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from xbeam_bluesky.errors import XbeamInputError

#: Modules that register sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[str, ...] = ("demo", "serve", "planning", "refine", "analysis_server", "cluster")

#: Printed after the traceback of an exception that is not an :class:`~xbeam_bluesky.errors.XbeamInputError`.
BUG_REPORT = (
    "internal error: this is a bug in xbeam-bluesky, not a problem with your input; please report it "
    "(an issue in the xbeam-bluesky repository) with the command line and the traceback above"
)


class CLIError(XbeamInputError):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="xbeam", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"xbeam_bluesky.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``xbeam`` command line and return its exit code.

    Returns
    -------
    int
        The command's own code (0 on success); 2 for bad input (argparse's usage errors and any
        :class:`~xbeam_bluesky.errors.XbeamInputError`, printed as one line without a traceback); 1 for any other
        exception, printed with its traceback and :data:`BUG_REPORT`.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except XbeamInputError as exc:
        print(f"xbeam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"xbeam {args.command}: {BUG_REPORT}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
