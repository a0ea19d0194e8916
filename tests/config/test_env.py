"""Environment variables: typing, error messages and rules across settings."""

from __future__ import annotations

import logging

import pytest

from tests.config.conftest import Layout, load, load_error, problem_for

ACCEPTED_BOOLEANS = "accepted: true, 1, yes, on, false, 0, no, off, in any case"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "REDIS_PORT",
            "abc",
            "REDIS_PORT from env REDIS_PORT: 'abc' is not an integer "
            "(a TCP port is 1 to 65535)",
        ),
        (
            "REDIS_PORT",
            "0",
            "REDIS_PORT from env REDIS_PORT: '0' is out of range "
            "(a TCP port is 1 to 65535)",
        ),
        (
            "REDIS_PORT",
            "65536",
            "REDIS_PORT from env REDIS_PORT: '65536' is out of range "
            "(a TCP port is 1 to 65535)",
        ),
        (
            "HTTP_PORT",
            "-80",
            "HTTP_PORT from env HTTP_PORT: '-80' is out of range "
            "(a TCP port is 1 to 65535)",
        ),
        (
            "REDIS_DB",
            "-1",
            "REDIS_DB from env REDIS_DB: '-1' is out of range "
            "(expected an integer >= 0)",
        ),
        (
            "REDIS_TLS",
            "maybe",
            f"REDIS_TLS from env REDIS_TLS: 'maybe' is not a boolean "
            f"({ACCEPTED_BOOLEANS})",
        ),
        (
            "REDIS_SOCKET_TIMEOUT",
            "soon",
            "REDIS_SOCKET_TIMEOUT from env REDIS_SOCKET_TIMEOUT: 'soon' is not "
            "a number",
        ),
        (
            "HTTP_TIMEOUT",
            "-1.5",
            "HTTP_TIMEOUT from env HTTP_TIMEOUT: '-1.5' must be a positive, "
            "finite number of seconds",
        ),
        (
            "LOG_LEVEL",
            "LOUD",
            "LOG_LEVEL from env LOG_LEVEL: 'LOUD' is not a log level (expected "
            "one of DEBUG, INFO, WARNING, ERROR, CRITICAL)",
        ),
        (
            "CONFIG_SOURCES",
            "env,bogus",
            "CONFIG_SOURCES from env CONFIG_SOURCES: 'env,bogus' is not a "
            "comma-separated list of sources from: files, vault, env, dotenv",
        ),
        (
            "CONFIG_SOURCES",
            "env,files,env",
            "CONFIG_SOURCES from env CONFIG_SOURCES: 'env,files,env' names a "
            "source more than once",
        ),
        (
            "APP_ENV",
            "staging",
            "APP_ENV from env APP_ENV: 'staging' is not one of: production, "
            "development",
        ),
        (
            "REDIS_HOST",
            "user@cache",
            "REDIS_HOST from env REDIS_HOST: 'user@cache' is not a host name "
            "or IP address",
        ),
        (
            "VAULT_ADDR",
            "127.0.0.1:8200",
            "VAULT_ADDR from env VAULT_ADDR: '127.0.0.1:8200' is not an http:// "
            "or https:// URL",
        ),
    ],
)
def test_invalid_value_message(
    layout: Layout, variable: str, value: str, expected: str
) -> None:
    error = load_error(layout.environ(**{variable: value}))

    assert len(error.problems) == 1
    assert problem_for(error, variable) == expected


def test_invalid_secret_value_not_quoted(layout: Layout) -> None:
    layout.secret_file("redis_password", "\n")

    message = str(load_error(layout.environ()))

    assert "REDIS_PASSWORD from file" in message
    assert "''" not in message


def test_all_problems_reported_together(layout: Layout) -> None:
    environ = layout.environ(
        REDIS_PORT="abc",
        REDIS_DB="-1",
        REDIS_TLS="maybe",
        REDIS_SOCKET_TIMEOUT="soon",
        LOG_LEVEL="LOUD",
        HTTP_PORT="0",
    )

    error = load_error(environ)

    assert len(error.problems) == 6
    assert {p.setting for p in error.problems} == {
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_TLS",
        "REDIS_SOCKET_TIMEOUT",
        "LOG_LEVEL",
        "HTTP_PORT",
    }
    assert str(error).startswith("invalid configuration, 6 problems:\n")


def test_bootstrap_problem_reported_with_others(layout: Layout) -> None:
    environ = layout.environ(CONFIG_SOURCES="env,bogus", REDIS_PORT="abc")

    error = load_error(environ)

    assert len(error.problems) == 2
    assert {p.setting for p in error.problems} == {"CONFIG_SOURCES", "REDIS_PORT"}


def test_invalid_app_env_skips_debug_rule(layout: Layout) -> None:
    error = load_error(layout.environ(APP_ENV="staging", APP_DEBUG="true"))

    assert [p.setting for p in error.problems] == ["APP_ENV"]


def test_problems_from_several_sources_together(layout: Layout) -> None:
    layout.secret_file("redis_password", "")
    layout.secret_file("redis_db", "minus one")

    error = load_error(layout.environ(REDIS_PORT="abc"))

    assert len(error.problems) == 3
    assert {p.setting for p in error.problems} == {
        "REDIS_PASSWORD",
        "REDIS_DB",
        "REDIS_PORT",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("False", False),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("True", True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        (" on ", True),
    ],
)
def test_boolean_words(layout: Layout, text: str, expected: bool) -> None:
    settings = load(layout.environ(REDIS_TLS=text))

    assert settings["REDIS_TLS"] is expected
    assert str(settings.resolved("REDIS_TLS").origin) == "env REDIS_TLS"


@pytest.mark.parametrize("text", ["fasle", "2", "enabled", "y", "-1", "truee"])
def test_boolean_invalid_word(layout: Layout, text: str) -> None:
    message = problem_for(load_error(layout.environ(REDIS_TLS=text)), "REDIS_TLS")

    assert message == (
        f"REDIS_TLS from env REDIS_TLS: {text!r} is not a boolean ({ACCEPTED_BOOLEANS})"
    )


def test_empty_variable_is_unset(layout: Layout) -> None:
    settings = load(layout.environ(REDIS_TLS="", REDIS_PORT=""))

    assert settings["REDIS_TLS"] is False
    assert settings.resolved("REDIS_TLS").origin.kind == "default"
    assert settings["REDIS_PORT"] == 6379
    assert settings.resolved("REDIS_PORT").origin.kind == "default"


def test_empty_variable_does_not_shadow(layout: Layout) -> None:
    layout.dotenv("REDIS_HOST=cache.dotenv\n")

    settings = load(layout.environ(APP_ENV="development", REDIS_HOST=""))

    assert settings["REDIS_HOST"] == "cache.dotenv"
    assert settings.resolved("REDIS_HOST").shadowed == ()


@pytest.mark.parametrize("variable", ["APP_DEBUG", "DEBUG"])
def test_debug_rejected_in_production(layout: Layout, variable: str) -> None:
    error = load_error(layout.environ(**{variable: "true"}))

    message = problem_for(error, "APP_DEBUG")
    assert message.startswith(f"APP_DEBUG from env {variable}: debug mode is not")
    assert "APP_ENV=production" in message


def test_debug_rejected_off_loopback(layout: Layout) -> None:
    environ = layout.environ(APP_ENV="development", APP_DEBUG="1", HTTP_HOST="0.0.0.0")

    message = problem_for(load_error(environ), "APP_DEBUG")

    assert "debug mode is not allowed with HTTP_HOST=0.0.0.0" in message
    assert "bind to 127.0.0.1" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_debug_allowed_on_loopback(layout: Layout, host: str) -> None:
    environ = layout.environ(APP_ENV="development", APP_DEBUG="yes", HTTP_HOST=host)

    settings = load(environ)

    assert settings["APP_DEBUG"] is True


def test_debug_false_allowed_in_production(layout: Layout) -> None:
    settings = load(layout.environ(APP_DEBUG="false", HTTP_HOST="0.0.0.0"))

    assert settings["APP_DEBUG"] is False


def test_redis_url_rejected(layout: Layout) -> None:
    error = load_error(layout.environ(REDIS_URL="redis://:hunter2@cache:6379/0"))

    message = problem_for(error, "REDIS_URL")
    assert message.startswith("REDIS_URL from env REDIS_URL: is not read")
    assert "set REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_USERNAME" in message
    assert "REDIS_PASSWORD_FILE" in message
    assert "hunter2" not in message


def test_redis_url_in_dotenv_rejected(layout: Layout) -> None:
    layout.dotenv("REDIS_URL=redis://:hunter2@cache:6379/0\n")

    error = load_error(layout.environ(APP_ENV="development"))

    message = problem_for(error, "REDIS_URL")
    assert message.startswith("REDIS_URL from .env REDIS_URL: is not read")
    assert "hunter2" not in message


def test_redis_url_in_unread_dotenv_ignored(layout: Layout) -> None:
    layout.dotenv("REDIS_URL=redis://cache:6379/0\n")

    settings = load(layout.environ(APP_ENV="production"))

    assert settings["REDIS_HOST"] == "localhost"


def test_secret_from_env_warns_in_production(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    load(layout.environ(REDIS_PASSWORD="hunter2-env"))

    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "setting=REDIS_PASSWORD" in warnings[0]
    assert "REDIS_PASSWORD_FILE" in warnings[0]
    assert "hunter2" not in caplog.text


def test_secret_from_env_silent_in_development(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    load(layout.environ(APP_ENV="development", REDIS_PASSWORD="hunter2-env"))

    assert caplog.records == []


def test_vault_addr_credentials_not_echoed() -> None:
    environ = {"VAULT_ADDR": "http://svc:Pw-canary-93kq@127.0.0.1:8200"}

    error = load_error(environ)

    assert "VAULT_ADDR from env VAULT_ADDR: the value contains user credentials" in (
        str(error)
    )
    assert "Pw-canary-93kq" not in str(error)
    assert "canary" not in str(error)


def test_vault_token_with_newlines_rejected(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hvs.canary-token-value\n\n")
    environ = {
        "VAULT_TOKEN_FILE": str(token_file),
        "SECRETS_DIR": str(tmp_path / "none"),
    }

    error = load_error(environ)

    assert "VAULT_TOKEN from file" in str(error)
    assert "white space or a control character" in str(error)
    assert "canary-token" not in str(error)


def test_flask_debug_rejected_in_production() -> None:
    error = load_error({"FLASK_DEBUG": "1"})

    assert problem_for(error, "FLASK_DEBUG").startswith(
        "FLASK_DEBUG from env FLASK_DEBUG: is set, and `flask run` would turn"
    )


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_flask_debug_off_allowed(value: str) -> None:
    assert load({"FLASK_DEBUG": value})["APP_DEBUG"] is False
