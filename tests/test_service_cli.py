"""`promptehr db`, `promptehr apikey` and `promptehr serve` (uvicorn replaced by a recorder)."""
from __future__ import annotations

import pytest

from promptehr.cli.main import main
from promptehr.service import migrate, store
from promptehr.service.auth import hash_key
from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.settings import get_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("PROMPTEHR_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_db_current_and_upgrade(env, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    env.setenv("DATABASE_URL", url)
    assert main(["db", "current"]) == 1
    assert "promptehr db upgrade" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0
    out = capsys.readouterr().out
    head = ", ".join(sorted(migrate.head_revisions()))  # the latest migration, whichever it is now
    assert f"current:  {head}" in out and f"latest:   {head}" in out


def test_apikey_create_prints_a_key_once_and_stores_its_hash(env, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    env.setenv("DATABASE_URL", url)
    assert main(["apikey", "create", "--name", "ci"]) == 2  # not migrated: refused
    assert "promptehr db upgrade" in capsys.readouterr().err
    migrate.upgrade(url)
    assert main(["apikey", "create", "--name", "ci"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    assert key.startswith("pehr_") and len(key) > 40
    engine = make_engine(url)
    with make_sessionmaker(engine)() as s:
        found = store.get_api_key_by_hash(s, hash_key(key))
        assert found is not None and found.name == "ci" and found.key_hash != key
    engine.dispose()


def test_embedded_database_is_migrated_by_apikey_and_serve(env, tmp_path, capsys):
    assert get_settings().database_is_embedded
    assert main(["apikey", "create", "--name", "me"]) == 0
    assert (tmp_path / "home" / "promptehr.sqlite3").is_file()

    import uvicorn

    import promptehr.cli.serve

    calls, runners = [], []
    env.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    env.setattr(promptehr.cli.serve, "install_local_runner", lambda settings: runners.append(settings))
    for suffix in ("", "-wal", "-shm"):  # start from no database at all
        (tmp_path / "home" / f"promptehr.sqlite3{suffix}").unlink(missing_ok=True)
    assert main(["serve", "--port", "8123"]) == 0
    _, kw = calls[0]
    assert kw["port"] == 8123 and kw["host"] == "127.0.0.1"
    assert len(runners) == 1  # no broker: jobs run in this process
    engine = make_engine(get_settings().database_url)
    migrate.check_schema_current(engine)  # serve migrated the embedded database
    engine.dispose()


def test_serve_refuses_an_old_schema_with_one_line(env, tmp_path, capsys):
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'old.sqlite3'}")
    import uvicorn

    env.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("must not start"))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "promptehr db upgrade" in err and len(err.strip().splitlines()) == 1


def test_install_local_runner_registers_the_workers_runner(env, monkeypatch):
    import promptehr.cli.serve
    import promptehr.worker.runner
    from promptehr.service import jobs

    monkeypatch.setattr(promptehr.worker.runner, "make_runner", lambda settings: ("runner-for", settings))
    try:
        promptehr.cli.serve.install_local_runner(get_settings())
        assert jobs.get_local_runner() == ("runner-for", get_settings())
    finally:
        jobs.set_local_runner(None)


def test_serve_workers_run_the_app_factory_in_several_processes(env, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    migrate.upgrade(url)
    env.setenv("DATABASE_URL", url)
    import uvicorn

    import promptehr.cli.serve

    calls = []
    env.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    env.setattr(promptehr.cli.serve, "install_local_runner", lambda settings: pytest.fail("no runner without a broker"))
    assert main(["serve", "--workers", "2"]) == 2  # no broker: jobs would run in one of several processes
    err = capsys.readouterr().err
    assert "CELERY_BROKER_URL" in err and len(err.strip().splitlines()) == 1
    assert calls == []

    env.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    assert main(["serve", "--workers", "3", "--port", "8124"]) == 0
    app, kw = calls[-1]
    assert app == "promptehr.service.app:create_app" and kw["factory"] is True and kw["workers"] == 3 and kw["port"] == 8124

    env.setenv("PROMPTEHR_API_WORKERS", "2")
    assert main(["serve"]) == 0
    assert calls[-1][1]["workers"] == 2
    env.setenv("PROMPTEHR_API_WORKERS", "1")
    assert main(["serve"]) == 0  # one process: the app object itself, as before
    assert not isinstance(calls[-1][0], str)
    assert main(["serve", "--workers", "0"]) == 2
