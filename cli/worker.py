"""`promptehr worker`: a Celery worker on the job queue (production; needs CELERY_BROKER_URL).

One job per worker process: --concurrency 1 (the default) runs one job at a time in one pool child;
more GPUs means more workers on the same queue. See worker/celery_app.py for the delivery settings.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run a Celery worker for training, generation and evaluation jobs",
                              description=__doc__.splitlines()[0])
    p.add_argument("--queue", default=None, help="queue to consume (default: settings.celery_queue, 'gpu')")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once, one pool process each (default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="the worker's log level (the same option as `promptehr serve --log-level`)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo"],
                   help="prefork (default): the job runs in a child the worker outlives; solo: in the worker itself")
    p.add_argument("--hostname", default=None, help="node name (default celery@<host>)")
    p.set_defaults(func=run)


def build_argv(args: argparse.Namespace, queue: str) -> list[str]:
    argv = ["worker", "--queues", queue, "--concurrency", str(args.concurrency), "--loglevel", args.log_level,
            "--pool", args.pool, "--without-gossip", "--without-mingle"]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    return argv


def run(args: argparse.Namespace) -> int:
    from promptehr.cli.main import UsageError
    from promptehr.service.settings import get_settings

    settings = get_settings()
    if not settings.celery_broker_url:
        raise UsageError("no CELERY_BROKER_URL: a worker needs a broker (without one, "
                         "`promptehr serve` runs jobs in its own process)")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    from promptehr.worker.celery_app import app

    app.worker_main(build_argv(args, args.queue or settings.celery_queue))
    return 0
