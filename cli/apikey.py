"""`promptehr apikey create|list|revoke`: API keys of the service (only a key's hash is kept).

`create` prints the new key alone on stdout (what a script captures) and its id on stderr; the key
cannot be shown again. A key belongs to a tenant (`--tenant`, default its name) and sees only what
its tenant created; `--admin` makes a key that sees every tenant's resources, and those made before
tenants existed. `--expires-in-days N` or `--expires DATE` make a key that stops working then.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

MAX_NAME = 200  # the column's size (service/models/api_key.py)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("apikey", help="API keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it (it cannot be shown again)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--tenant", help="the tenant whose resources the key shares (default: its name)")
    create.add_argument("--admin", action="store_true", help="the key sees every tenant's resources")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=int, metavar="N", help="the key stops working N days from now")
    expiry.add_argument("--expires", metavar="DATE",
                        help="the key stops working at this ISO date (00:00 UTC) or date-time (UTC unless it says)")
    create.set_defaults(func=create_key)
    listing = sub.add_parser("list", help="list the keys (never the keys themselves): id, name, prefix, tenant, ...")
    listing.set_defaults(func=list_keys)
    revoke = sub.add_parser("revoke", help="revoke a key by its id: it is refused (401) from now on")
    revoke.add_argument("id", help="the key's id (from `promptehr apikey list`)")
    revoke.set_defaults(func=revoke_key)


def _name(value: str | None, option: str) -> str | None:
    from promptehr.cli.main import UsageError

    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_NAME:
        raise UsageError(f"{option} must be 1 to {MAX_NAME} characters")
    return value


def expiry_of(args: argparse.Namespace, now: datetime) -> datetime | None:
    """When the key stops working (UTC), from --expires-in-days or --expires; it must be in the future."""
    from promptehr.cli.main import UsageError

    if args.expires_in_days is not None:
        if not 1 <= args.expires_in_days <= 36500:
            raise UsageError("--expires-in-days must be 1 to 36500")
        return now + timedelta(days=args.expires_in_days)
    if args.expires is None:
        return None
    try:
        at = datetime.fromisoformat(args.expires.strip())
    except ValueError:
        raise UsageError(f"--expires: {args.expires!r} is not an ISO date (2027-01-31) or date-time") from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at <= now:
        raise UsageError(f"--expires: {at.isoformat()} is not in the future")
    return at


@contextmanager
def _session() -> Iterator:
    """A session on the service's database, migrated first when it is the embedded file; a schema
    behind the latest migration is a usage error (run `promptehr db upgrade`)."""
    from promptehr.cli.main import UsageError
    from promptehr.service import migrate
    from promptehr.service.db import make_engine, make_sessionmaker
    from promptehr.service.settings import get_settings

    settings = get_settings()
    if settings.database_is_embedded:
        migrate.upgrade(settings.database_url)  # the embedded database: nothing else to wait for
    engine = make_engine(settings.database_url)
    try:
        try:
            migrate.check_schema_current(engine)
        except migrate.SchemaOutOfDate as e:
            raise UsageError(str(e)) from None
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def create_key(args: argparse.Namespace) -> int:
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key

    name = _name(args.name, "--name")
    tenant = _name(args.tenant, "--tenant")
    expires_at = expiry_of(args, datetime.now(UTC))
    with _session() as session:
        key = generate_key()
        record = store.create_api_key(session, name=name, key_hash=hash_key(key), prefix=key[:10], tenant=tenant,
                                      is_admin=args.admin, expires_at=expires_at)
        print(key, flush=True)
        kind = "admin key" if record.is_admin else "key"
        until = f", expires {_when(record.expires_at)}" if record.expires_at else ""
        print(f"(API {kind} {record.id} for {name!r}, tenant {record.tenant!r}{until}; shown once, store it now)",
              file=sys.stderr, flush=True)
    return 0


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


COLUMNS = ("id", "name", "prefix", "tenant", "admin", "created", "expires", "revoked")


def key_rows(keys, now: datetime) -> list[tuple[str, ...]]:
    """One row of text per key; an expired key's expiry says so."""
    rows = []
    for k in keys:
        expires = _when(k.expires_at)
        if k.expires_at is not None and k.expires_at <= now:
            expires += " (expired)"
        rows.append((k.id, k.name, k.prefix, k.tenant, "yes" if k.is_admin else "no", _when(k.created_at),
                     expires, _when(k.revoked_at)))
    return rows


def list_keys(args: argparse.Namespace) -> int:
    from promptehr.service import store

    with _session() as session:
        rows = [COLUMNS, *key_rows(store.list_api_keys(session), datetime.now(UTC))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    from promptehr.cli.main import UsageError
    from promptehr.service import store

    with _session() as session:
        before = store.get_api_key(session, args.id)
        if before is None:
            raise UsageError(f"no API key {args.id!r} (see `promptehr apikey list`)")
        already = before.revoked_at is not None
        record = store.revoke_api_key(session, args.id)
        note = "was already revoked at" if already else "revoked at"
        print(f"API key {record.id} ({record.name!r}) {note} {_when(record.revoked_at)}")
    return 0
