"""`promptehr serve`: run the REST API under uvicorn.

With no DATABASE_URL (the embedded default: a SQLite file under PROMPTEHR_HOME) the database is
migrated to the latest schema first, since nothing else uses it. With a DATABASE_URL it is not: run
`promptehr db upgrade`, and the API refuses to start on an out-of-date schema.

With no CELERY_BROKER_URL, jobs run in this process: the runner from `worker.runner`
(`make_runner(settings) -> callable(task_name, job_id)`) is registered with
`service.jobs.set_local_runner` (the runner picks up jobs an earlier run left queued or running).

`--workers N` (or PROMPTEHR_API_WORKERS) runs N uvicorn worker processes, each with the app of
`service.app:create_app` built from the same environment; it needs CELERY_BROKER_URL, since the
in-process runner lives in one process. One process is the default: see docs/performance.md.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the REST API", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (the same option as `promptehr worker --log-level`)")
    p.add_argument("--workers", type=int, default=None,
                   help="API worker processes (default PROMPTEHR_API_WORKERS or 1); above 1 needs CELERY_BROKER_URL")
    p.set_defaults(func=run)


def install_local_runner(settings) -> None:
    """Register the in-process job runner (worker.runner) with service.jobs."""
    # worker/ is imported only here: an API that sends its jobs to a broker never loads it
    # (tests/test_service_app.py checks that importing cli.serve does not).
    from promptehr.service.jobs import set_local_runner
    from promptehr.worker.runner import make_runner

    set_local_runner(make_runner(settings))


def _refuse_old_schema(settings) -> None:
    """A one-line error instead of uvicorn's start-up traceback (the app checks again at start-up)."""
    import sqlalchemy.exc as sa_exc

    from promptehr.cli.main import UsageError
    from promptehr.service.db import make_engine
    from promptehr.service.migrate import SchemaOutOfDate, check_schema_current

    engine = make_engine(settings.database_url)
    try:
        check_schema_current(engine)
    except SchemaOutOfDate as e:
        raise UsageError(str(e)) from None
    except (sa_exc.OperationalError, sa_exc.InterfaceError):
        pass  # unreachable now: the app starts and /readyz says so
    finally:
        engine.dispose()


def _workers(args: argparse.Namespace) -> int:
    import os

    from promptehr.cli.main import UsageError

    raw = args.workers if args.workers is not None else os.environ.get("PROMPTEHR_API_WORKERS", "1")
    try:
        workers = int(raw)
    except ValueError:
        raise UsageError(f"PROMPTEHR_API_WORKERS must be a whole number, not {raw!r}") from None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    return workers


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from promptehr.cli.main import UsageError
    from promptehr.service.app import create_app
    from promptehr.service.migrate import upgrade
    from promptehr.service.settings import get_settings

    settings = get_settings()
    workers = _workers(args)
    if workers > 1 and settings.jobs_run_in_process:
        raise UsageError("--workers above 1 needs CELERY_BROKER_URL: without a broker jobs run inside the "
                         "API process, and there must be one")
    if settings.database_is_embedded:
        upgrade(settings.database_url)
    else:
        _refuse_old_schema(settings)
    if workers > 1:
        # Each worker process builds its app from the environment, as this process built `settings`.
        uvicorn.run("promptehr.service.app:create_app", factory=True, workers=workers, host=args.host, port=args.port,
                    log_level=args.log_level)
        return 0
    if settings.jobs_run_in_process:
        install_local_runner(settings)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
