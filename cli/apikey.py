"""`promptehr apikey create --name NAME`: make an API key and print it once (only its hash is kept)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("apikey", help="API keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it (it cannot be shown again)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.set_defaults(func=create_key)


def create_key(args: argparse.Namespace) -> int:
    from cli.main import UsageError
    from service import migrate, store
    from service.auth import generate_key, hash_key
    from service.db import make_engine, make_sessionmaker
    from service.settings import get_settings

    settings = get_settings()
    name = args.name.strip()
    if not name or len(name) > 200:
        raise UsageError("--name must be 1 to 200 characters")
    if settings.database_is_embedded:
        migrate.upgrade(settings.database_url)  # the embedded database: nothing else to wait for
    engine = make_engine(settings.database_url)
    try:
        try:
            migrate.check_schema_current(engine)
        except migrate.SchemaOutOfDate as e:
            raise UsageError(str(e)) from None
        key = generate_key()
        with make_sessionmaker(engine)() as session:
            record = store.create_api_key(session, name=name, key_hash=hash_key(key), prefix=key[:10])
        print(key)
        print(f"(API key {record.id} for {name!r}; shown once, store it now)", flush=True)
    finally:
        engine.dispose()
    return 0
