"""The service as it is deployed: gunicorn in a child process, against real Redis.

The command is `gunicorn -c python:app.gunicorn_conf 'app:create_app()'`, and the
Redis password always arrives as a file in SECRETS_DIR, never in the environment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from config import MASK, SETTINGS
from tests.app.conftest import COUNTER_ACL, GunicornFactory, write_secrets
from tests.app.service import GunicornService, read_proc
from tests.conftest import RedisFactory
from tests.support.servers import RedisServer, random_secret

SETTING_LINE = re.compile(r"setting name=(\w+) value=(.*) source=(.*)$", re.MULTILINE)


def settings_for(
    tmp_path: Path, server: RedisServer, password: str, **extra: str
) -> dict[str, str]:
    """Return the service environment for `server`, with `password` as a file."""
    secrets_dir = write_secrets(tmp_path / "secrets", {"REDIS_PASSWORD": password})
    return {
        "SECRETS_DIR": str(secrets_dir),
        "REDIS_HOST": server.host,
        "REDIS_PORT": str(server.port),
        **extra,
    }


def counts(service: GunicornService, requests_made: int) -> list[str]:
    return [service.get("/").text for _ in range(requests_made)]


def hello(*numbers: int) -> list[str]:
    return [f"Hello World! {n} times.\n" for n in numbers]


@pytest.fixture
def canary() -> str:
    """A password that no output, environment or command line may contain."""
    return f"canary-{random_secret()}"


def test_requirepass_counts(
    tmp_path: Path, redis_factory: RedisFactory, gunicorn_factory: GunicornFactory
) -> None:
    server = redis_factory(password=random_secret())
    service = gunicorn_factory(settings_for(tmp_path, server, server.password))

    assert counts(service, 3) == hello(1, 2, 3)
    assert service.get("/readyz").status_code == 200
    assert server.admin_client().get("hits") == "3"


def test_acl_user_counts(
    tmp_path: Path, redis_factory: RedisFactory, gunicorn_factory: GunicornFactory
) -> None:
    server = redis_factory(password=random_secret())
    password = random_secret()
    admin = server.admin_client()
    admin.execute_command("ACL", "SETUSER", "counter", "on", f">{password}")
    admin.execute_command("ACL", "SETUSER", "counter", *COUNTER_ACL.split())
    settings = settings_for(tmp_path, server, password, REDIS_USERNAME="counter")
    service = gunicorn_factory(settings)

    assert counts(service, 3) == hello(1, 2, 3)
    assert service.get("/readyz").status_code == 200
    assert admin.get("hits") == "3"
    assert admin.acl_log() == []


def test_acl_user_wrong_key_503(
    tmp_path: Path, redis_factory: RedisFactory, gunicorn_factory: GunicornFactory
) -> None:
    server = redis_factory(password=random_secret())
    password = random_secret()
    server.admin_client().execute_command(
        "ACL", "SETUSER", "counter", "on", f">{password}", *COUNTER_ACL.split()
    )
    settings = settings_for(
        tmp_path, server, password, REDIS_USERNAME="counter", COUNTER_KEY="other"
    )
    service = gunicorn_factory(settings)

    response = service.get("/")

    assert response.status_code == 503
    assert "NoPermissionError" in service.output()


def test_redis_restart_recovers(
    tmp_path: Path, redis_factory: RedisFactory, gunicorn_factory: GunicornFactory
) -> None:
    server = redis_factory(password=random_secret())
    settings = settings_for(tmp_path, server, server.password, WEB_CONCURRENCY="2")
    service = gunicorn_factory(settings, workers=2)
    workers = service.worker_pids()
    assert counts(service, 4) == hello(1, 2, 3, 4)

    server.stop()
    assert service.get("/").status_code == 503
    assert service.get("/readyz").status_code == 503
    server.start()

    # Both workers still pool a connection to the stopped server.
    assert counts(service, 4) == hello(1, 2, 3, 4)
    assert service.get("/readyz").status_code == 200
    assert service.worker_pids() == workers
    assert service.process is not None
    assert service.process.poll() is None


@pytest.mark.parametrize("workers", [2, 3])
def test_web_concurrency_sets_workers(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
    workers: int,
) -> None:
    settings = settings_for(
        tmp_path, redis_server, redis_server.password, WEB_CONCURRENCY=str(workers)
    )
    service = gunicorn_factory(settings, workers=workers)

    assert len(service.worker_pids()) == workers
    assert service.get("/").status_code == 200


def test_access_log_drops_query(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
    canary: str,
) -> None:
    service = gunicorn_factory(
        settings_for(tmp_path, redis_server, redis_server.password)
    )

    response = service.get(f"/?token={canary}")
    service.stop()

    output = service.output()
    assert response.status_code == 200
    assert canary not in output
    assert "token=" not in output
    assert re.search(r'"GET /" 200 \d+ \d+ms$', output, re.MULTILINE)


def test_access_log_escapes_control_characters(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
) -> None:
    service = gunicorn_factory(
        settings_for(tmp_path, redis_server, redis_server.password)
    )

    # The path is percent-decoded before it is logged.
    response = service.get("/%0a127.0.0.1%20%22GET%20/forged%22%20200%1b[31m")
    service.stop()

    output = service.output()
    assert response.status_code == 404
    assert not re.search(r'^127\.0\.0\.1 "GET /forged"', output, re.MULTILINE)
    assert "\x1b" not in output
    assert '"GET /\\n127.0.0.1 \\"GET /forged\\" 200\\x1b[31m" 404' in output


def test_canary_password_never_shown(
    tmp_path: Path,
    redis_factory: RedisFactory,
    gunicorn_factory: GunicornFactory,
    canary: str,
) -> None:
    """The password is absent from output, bodies, command lines and environments.

    A subprocess started by a worker inherits the worker's environment, so the
    environment check covers what such a subprocess would see.
    """
    server = redis_factory(password=canary)
    settings = settings_for(
        tmp_path, server, canary, LOG_LEVEL="DEBUG", WEB_CONCURRENCY="2"
    )
    service = gunicorn_factory(settings, workers=2)
    paths = ("/", "/readyz", "/missing", "/metrics")
    responses = [service.get(path) for path in paths]
    server.stop()
    responses += [service.get(path) for path in ("/", "/readyz")]
    server.start()
    responses += [service.get(path) for path in ("/", "/readyz")]
    processes = [service.pid, *service.worker_pids()]
    proc_files = {
        (pid, name): read_proc(pid, name)
        for pid in processes
        for name in ("cmdline", "environ")
    }
    service.stop()

    statuses = [response.status_code for response in responses]
    assert statuses == [200, 200, 404, 200, 503, 503, 200, 200]
    for response in responses:
        assert canary not in response.text
    assert len(processes) == 3
    for (pid, name), content in proc_files.items():
        assert content, f"/proc/{pid}/{name} was not read"
        assert canary.encode() not in content, f"/proc/{pid}/{name}"
    output = service.output()
    assert "DEBUG" in output
    assert "counter update failed" in output
    assert canary not in output


def test_wrong_password_not_shown(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
    canary: str,
) -> None:
    settings = settings_for(tmp_path, redis_server, canary, LOG_LEVEL="DEBUG")
    service = gunicorn_factory(settings)

    counter = service.get("/")
    readiness = service.get("/readyz")
    service.stop()

    output = service.output()
    assert counter.status_code == 503
    assert readiness.status_code == 503
    assert readiness.json() == {"status": "unavailable", "redis": "AuthenticationError"}
    assert "AuthenticationError" in output
    assert canary not in counter.text + readiness.text + output
    assert redis_server.password not in output


def test_startup_logs_each_setting_once(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
) -> None:
    settings = settings_for(
        tmp_path, redis_server, redis_server.password, WEB_CONCURRENCY="2"
    )
    service = gunicorn_factory(settings, workers=2)
    service.stop()

    lines = SETTING_LINE.findall(service.stdout_path.read_text())
    logged = {name: (value, source) for name, value, source in lines}
    secrets_file = Path(settings["SECRETS_DIR"]) / "redis_password"
    assert sorted(name for name, _, _ in lines) == sorted(f.name for f in SETTINGS)
    assert logged["REDIS_PASSWORD"] == (MASK, f"file {secrets_file}")
    assert logged["REDIS_PORT"] == (str(redis_server.port), "env REDIS_PORT")
    assert logged["COUNTER_KEY"] == ("hits", "default")
    assert logged["APP_DEBUG"] == ("False", "default")
    assert redis_server.password not in service.output()


def test_debug_in_production_exits(tmp_path: Path) -> None:
    service = GunicornService(
        tmp_path / "gunicorn", {"APP_ENV": "production", "APP_DEBUG": "true"}
    )

    returncode = service.spawn().wait(timeout=30)

    stderr = service.stderr_path.read_text()
    assert returncode != 0
    assert "APP_DEBUG" in stderr
    assert "APP_ENV=production" in stderr
    assert "Traceback" not in stderr
    with pytest.raises(requests.ConnectionError):
        service.get("/healthz")


def test_stop_removes_metrics_dir(
    tmp_path: Path,
    redis_server: RedisServer,
    gunicorn_factory: GunicornFactory,
) -> None:
    """gunicorn_conf makes a metrics directory under TMPDIR and removes it on exit.

    The service's TMPDIR is its own test directory, which has no other folder.
    """
    service = gunicorn_factory(
        settings_for(tmp_path, redis_server, redis_server.password)
    )
    assert service.get("/").status_code == 200
    created = [path for path in service.directory.iterdir() if path.is_dir()]

    returncode = service.stop()

    assert len(created) == 1
    assert returncode == 0
    assert not created[0].exists()
