"""The routes through Flask's test client, against a real redis-server."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis
from flask import Flask

from app import create_app, views
from app.views import UNAVAILABLE
from config import load_settings
from tests.app.conftest import COUNTER_ACL, write_secrets
from tests.conftest import RedisFactory
from tests.support.servers import RedisServer, random_secret

MAX_ERROR_BODY_BYTES = 200


def make_app(
    tmp_path: Path,
    server: RedisServer,
    password: str | None = None,
    **settings: str,
) -> Flask:
    """Build the app for `server`, with the password as a secret file."""
    secret = server.password if password is None else password
    secrets_dir = write_secrets(
        tmp_path / "secrets", {"REDIS_PASSWORD": secret} if secret else {}
    )
    environ = {
        "SECRETS_DIR": str(secrets_dir),
        "REDIS_HOST": server.host,
        "REDIS_PORT": str(server.port),
        **settings,
    }
    return create_app(load_settings(environ))


def command_counts(admin: redis.Redis) -> dict[str, int]:
    """Return Redis's `INFO commandstats` as command name -> calls."""
    stats: Mapping[str, Mapping[str, int]] = admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
    }


def counted_since(before: Mapping[str, int], after: Mapping[str, int]) -> dict:
    return {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if calls != before.get(name, 0)
    }


def test_counter_adds_one_per_request(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = make_app(tmp_path, redis_server).test_client()

    bodies = [client.get("/").get_data(as_text=True) for _ in range(3)]

    assert bodies == [f"Hello World! {n} times.\n" for n in (1, 2, 3)]
    assert redis_server.admin_client().get("hits") == "3"


def test_counter_uses_counter_key(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server, COUNTER_KEY="visits").test_client()
    redis_server.admin_client().set("visits", 41)

    response = client.get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "Hello World! 42 times.\n"
    assert redis_server.admin_client().get("hits") is None


def test_healthz_needs_no_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server).test_client()
    redis_server.stop()

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_data(as_text=True) == "ok\n"


def test_readyz_ready(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server).test_client()

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "redis": "ok"}


def test_readyz_wrong_password(tmp_path: Path, redis_server: RedisServer) -> None:
    wrong = f"wrong-{random_secret()}"
    client = make_app(tmp_path, redis_server, password=wrong).test_client()

    response = client.get("/readyz")

    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "redis": "AuthenticationError",
    }
    assert wrong not in body
    assert redis_server.password not in body


def test_readyz_redis_stopped(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server).test_client()
    assert client.get("/readyz").status_code == 200

    redis_server.stop()
    response = client.get("/readyz")

    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert redis_server.password not in body


def test_counter_redis_error_503(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server).test_client()
    redis_server.stop()

    response = client.get("/")

    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert body == UNAVAILABLE
    assert len(response.get_data()) < MAX_ERROR_BODY_BYTES
    assert "Traceback" not in body
    assert redis_server.password not in body


def test_counter_wrong_password_503(tmp_path: Path, redis_server: RedisServer) -> None:
    wrong = f"wrong-{random_secret()}"
    client = make_app(tmp_path, redis_server, password=wrong).test_client()

    response = client.get("/")

    assert response.status_code == 503
    assert response.get_data(as_text=True) == UNAVAILABLE


def test_recovers_when_redis_returns(tmp_path: Path, redis_server: RedisServer) -> None:
    """A restarted Redis is used again by the same app, from the first request.

    The pool still contains the connection made before the restart, and the
    pool finds it closed when it is checked out, so it connects again.
    """
    client = make_app(tmp_path, redis_server).test_client()
    assert client.get("/").status_code == 200

    redis_server.stop()
    assert client.get("/").status_code == 503
    assert client.get("/readyz").status_code == 503
    redis_server.start()

    # The restarted server is empty, so the count starts again.
    assert client.get("/").get_data(as_text=True) == "Hello World! 1 times.\n"
    assert client.get("/readyz").status_code == 200


def test_idle_connection_after_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = make_app(tmp_path, redis_server).test_client()
    assert client.get("/").status_code == 200

    # No request runs while the server restarts, so the pooled connection looks
    # idle and healthy.
    redis_server.restart()

    assert client.get("/").get_data(as_text=True) == "Hello World! 1 times.\n"


def test_unhandled_error_generic_500(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    canary = f"canary-{random_secret()}"
    app = make_app(tmp_path, redis_server)

    def fail() -> str:
        raise RuntimeError(f"view failed {canary}")

    app.add_url_rule("/fail", view_func=fail)

    response = app.test_client().get("/fail")

    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert body == "Internal Server Error\n"
    assert "Traceback" not in body
    assert canary not in body
    assert str(redis_server.port) not in body
    assert redis_server.password not in body
    # The details go to the service's log instead.
    assert "RuntimeError" in caplog.text


def test_unknown_path_404(tmp_path: Path, redis_server: RedisServer) -> None:
    response = make_app(tmp_path, redis_server).test_client().get("/missing")

    assert response.status_code == 404


def test_debug_off_by_default(tmp_path: Path, redis_server: RedisServer) -> None:
    production = make_app(tmp_path, redis_server)
    development = make_app(tmp_path, redis_server, APP_ENV="development")

    assert production.debug is False
    assert development.debug is False


def test_debug_on_in_development(tmp_path: Path, redis_server: RedisServer) -> None:
    app = make_app(tmp_path, redis_server, APP_ENV="development", APP_DEBUG="true")

    assert app.debug is True


def test_one_round_trip_per_request(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server).test_client()
    admin = redis_server.admin_client()
    before_first = command_counts(admin)
    assert client.get("/").status_code == 200
    first = counted_since(before_first, command_counts(admin))

    before = command_counts(admin)
    for _ in range(5):
        assert client.get("/").status_code == 200
    after = command_counts(admin)

    # The first request opens the connection (HELLO or AUTH, maybe CLIENT
    # SETINFO) before it counts. The service counts with INCRBY, and INCR is
    # accepted too. Each INFO call made by this test is counted by the next one.
    increments = {"incr", "incrby"}
    assert set(first) <= {"hello", "auth", "client|setinfo", "info", *increments}
    assert sum(first.get(name, 0) for name in increments) == 1

    steady = counted_since(before, after)
    assert steady.pop("info") == 1
    assert set(steady) <= increments
    assert sum(steady.values()) == 5


def test_acl_user_needs_only_incr_ping(
    tmp_path: Path, redis_factory: RedisFactory
) -> None:
    password = random_secret()
    server = redis_factory(
        password=random_secret(),
        users={"counter": f"on >{password} {COUNTER_ACL}"},
    )
    client = make_app(
        tmp_path, server, password=password, REDIS_USERNAME="counter"
    ).test_client()

    assert client.get("/").get_data(as_text=True) == "Hello World! 1 times.\n"
    assert client.get("/readyz").status_code == 200


def test_no_secret_in_debug_logs(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_app(tmp_path, redis_server, LOG_LEVEL="DEBUG").test_client()
    client.get("/")
    client.get("/readyz")
    redis_server.stop()
    client.get("/")
    client.get("/readyz")

    assert "setting name=REDIS_PASSWORD value=**********" in caplog.text
    assert "counter update failed" in caplog.text
    assert redis_server.password not in caplog.text


def test_slow_redis_times_out_503(tmp_path: Path, redis_server: RedisServer) -> None:
    client = make_app(tmp_path, redis_server, REDIS_SOCKET_TIMEOUT="0.5").test_client()
    assert client.get("/").status_code == 200

    # CLIENT PAUSE delays every client's commands, so Redis accepts the
    # connection and the command but sends no reply until the pause ends.
    redis_server.admin_client().execute_command("CLIENT", "PAUSE", "3000", "ALL")
    started = time.monotonic()
    response = client.get("/")
    elapsed = time.monotonic() - started
    redis_server.admin_client().execute_command("CLIENT", "UNPAUSE")

    assert response.status_code == 503
    assert response.get_data(as_text=True) == UNAVAILABLE
    assert elapsed < 2.0
    assert client.get("/").status_code == 200


def test_failure_log_limits_repeats(caplog: pytest.LogCaptureFixture) -> None:
    failures = views._FailureLog(interval=60.0, burst=2)

    with caplog.at_level(logging.WARNING, logger="app.views"):
        for _ in range(5):
            failures.log(redis.ConnectionError("Connection refused."))

    lines = [r.getMessage() for r in caplog.records]
    assert (
        lines
        == [
            "counter update failed error=ConnectionError: Connection refused. "
            "suppressed=0"
        ]
        * 2
    )


def test_store_and_pool_print_masked(
    tmp_path: Path, redis_factory: RedisFactory
) -> None:
    password = f"canary-{random_secret()}"
    server = redis_factory(password=password)
    app = make_app(tmp_path, server, REDIS_USERNAME="default")
    store = app.extensions["store"]
    store.incr("hits")
    connection = store.pool.get_connection()
    store.pool.release(connection)

    shown = [
        repr(store),
        repr(store.pool),
        repr(connection),
        repr(store.credentials),
        str(app.extensions["settings"]),
    ]

    for text in shown:
        assert password not in text
        assert password[7:13] not in text
    assert "<masked>" in repr(store.credentials)
