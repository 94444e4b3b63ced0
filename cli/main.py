"""The `promptehr` command: one entry point, one module per subcommand.

Subcommand modules are imported lazily so that `promptehr serve` never pays for torch and a
broken optional dependency of one command cannot break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under cli/ exposing add_parser(subparsers) and setting `func` on its parser.
COMMANDS = {
    "data": "cli.data",
    "train": "cli.train",
    "generate": "cli.generate",
    "evaluate": "cli.evaluate",
    "demo": "cli.demo",
    "serve": "cli.serve",
    "worker": "cli.worker",
    "db": "cli.db",
    "apikey": "cli.apikey",
}


class UsageError(Exception):
    """Bad input from the user: printed on one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptehr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # not written yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from model.errors import CheckpointError, DataError

    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except (DataError, CheckpointError, UsageError, FileNotFoundError, NotADirectoryError) as e:
        print(f"promptehr {args.command}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"promptehr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
