"""The `promptehr` command: one entry point, one module per subcommand.

Subcommand modules are imported lazily so that `promptehr serve` never pays for torch and a
broken optional dependency of one command cannot break the others.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys

# name -> module under cli/ exposing add_parser(subparsers) and setting `func` on its parser.
COMMANDS = {
    "data": "promptehr.cli.data",
    "train": "promptehr.cli.train",
    "generate": "promptehr.cli.generate",
    "evaluate": "promptehr.cli.evaluate",
    "demo": "promptehr.cli.demo",
    "serve": "promptehr.cli.serve",
    "worker": "promptehr.cli.worker",
    "db": "promptehr.cli.db",
    "apikey": "promptehr.cli.apikey",
}


# Top-level modules of the `service` extra: a command that needs one says how to install it.
SERVICE_MODULES = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "celery", "kombu", "redis",
                   "pydantic_settings"}


class UsageError(Exception):
    """Bad input from the user: printed on one line, exit code 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, except where there is none, the help already says it, or the
    option is a switch (`--no-time`'s default True would read as "no time by default")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.nargs == 0 or "default" in text:
            return text
        return super()._get_help_string(action)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("promptehr")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


# Set by main() from -q: the commands' progress bars pass it to tqdm as `disable`.
quiet_progress = False


def set_verbosity(verbose: int, quiet: int) -> int:
    """-v / -q: the logging level of the run (WARNING by default; -v INFO, -vv DEBUG, -q ERROR, -qq CRITICAL);
    returns the level. Progress bars go with -q."""
    level = min(max(logging.WARNING + 10 * (quiet - verbose), logging.DEBUG), logging.CRITICAL)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    return level


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptehr", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output: errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))
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
    from promptehr.model.errors import CheckpointError, DataError, TrainingError

    args = build_parser().parse_args(argv)
    global quiet_progress
    quiet_progress = set_verbosity(args.verbose, args.quiet) > logging.WARNING
    try:
        rc = args.func(args)
    except (DataError, CheckpointError, UsageError, FileNotFoundError, NotADirectoryError) as e:
        print(f"promptehr {args.command}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in SERVICE_MODULES:
            raise
        print(f"promptehr {args.command}: needs the service extra (pip install 'promptehr[service]'): no module "
              f"named {e.name!r}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"promptehr {args.command}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"promptehr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
