"""`promptehr db upgrade|current|downgrade`: Alembic migrations of the service database
(DATABASE_URL, or the embedded SQLite file under PROMPTEHR_HOME)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("db", help="database migrations", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="migrate to the latest schema (or --revision)")
    up.add_argument("--revision", default="head", help="Alembic revision to upgrade to")
    up.set_defaults(func=upgrade)
    cur = sub.add_parser("current", help="print the database's schema revision and the latest one")
    cur.set_defaults(func=current)
    down = sub.add_parser("downgrade", help="migrate down to REVISION ('base' empties the database)")
    down.add_argument("revision")
    down.set_defaults(func=downgrade)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def upgrade(args: argparse.Namespace) -> int:
    from promptehr.service import migrate
    from promptehr.service.settings import get_settings

    url = get_settings().database_url
    migrate.upgrade(url, args.revision)
    print(f"{_redacted(url)}: upgraded to {args.revision}")
    return 0


def downgrade(args: argparse.Namespace) -> int:
    from promptehr.service import migrate
    from promptehr.service.settings import get_settings

    url = get_settings().database_url
    migrate.downgrade(url, args.revision)
    print(f"{_redacted(url)}: downgraded to {args.revision}")
    return 0


def current(args: argparse.Namespace) -> int:
    from promptehr.service import migrate
    from promptehr.service.db import make_engine
    from promptehr.service.settings import get_settings

    url = get_settings().database_url
    engine = make_engine(url)
    try:
        have = migrate.current_revisions(engine)
    finally:
        engine.dispose()
    heads = migrate.head_revisions()
    print(f"database: {_redacted(url)}")
    print(f"current:  {', '.join(sorted(have)) or '(empty)'}")
    print(f"latest:   {', '.join(sorted(heads))}")
    if have != heads:
        print("the database is behind: run `promptehr db upgrade`")
        return 1
    return 0
