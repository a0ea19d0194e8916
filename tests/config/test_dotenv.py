"""The .env file: python-dotenv syntax, literal values, and what it never does."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Secret
from config.sources.dotenv import MAX_DOTENV_BYTES
from tests.config.conftest import Layout, load, load_error

DEVELOPMENT = {"APP_ENV": "development"}


def value_of(settings: object, name: str) -> object:
    value = settings[name]  # type: ignore[index]
    return value.reveal() if isinstance(value, Secret) else value


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("REDIS_PASSWORD='Zx${HOME}9$q'\n", "REDIS_PASSWORD", "Zx${HOME}9$q"),
        ('REDIS_PASSWORD="Zx${HOME}9$q"\n', "REDIS_PASSWORD", "Zx${HOME}9$q"),
        ("REDIS_PASSWORD=Zx$HOME9\n", "REDIS_PASSWORD", "Zx$HOME9"),
        ("REDIS_PASSWORD=Zx${HOME}9\n", "REDIS_PASSWORD", "Zx${HOME}9"),
        ("export REDIS_HOST=cache.internal\n", "REDIS_HOST", "cache.internal"),
        ("REDIS_PASSWORD=p@ss#word\n", "REDIS_PASSWORD", "p@ss#word"),
        ("REDIS_PASSWORD=p@ss #word\n", "REDIS_PASSWORD", "p@ss"),
        ("REDIS_PASSWORD='p@ss #word'\n", "REDIS_PASSWORD", "p@ss #word"),
        ('REDIS_PASSWORD="p@ss #word"\n', "REDIS_PASSWORD", "p@ss #word"),
        ("REDIS_PASSWORD='p@ss' # note\n", "REDIS_PASSWORD", "p@ss"),
        ("REDIS_HOST=cache.internal\r\n", "REDIS_HOST", "cache.internal"),
        ("REDIS_PASSWORD=crlf\r\nREDIS_HOST=h\r\n", "REDIS_PASSWORD", "crlf"),
        ("REDIS_HOST=a\r\nREDIS_PORT=6380\r\n", "REDIS_PORT", 6380),
        ('REDIS_PASSWORD="one\\ntwo"\n', "REDIS_PASSWORD", "one\ntwo"),
        ("REDIS_PASSWORD='one\\ntwo'\n", "REDIS_PASSWORD", "one\\ntwo"),
        ("  REDIS_HOST = spaced  \n", "REDIS_HOST", "spaced"),
        ("REDIS_HOST=first\nREDIS_HOST=second\n", "REDIS_HOST", "second"),
        ("REDIS_HOST=no-final-newline", "REDIS_HOST", "no-final-newline"),
        ("REDIS_HOST\n", "REDIS_HOST", "localhost"),
        ("REDIS_HOST=\n", "REDIS_HOST", "localhost"),
        ("# REDIS_HOST=commented\n", "REDIS_HOST", "localhost"),
        ("HOST_REDIS=alias.internal\n", "REDIS_HOST", "alias.internal"),
    ],
    ids=repr,
)
def test_dotenv_value(layout: Layout, text: str, name: str, expected: object) -> None:
    layout.dotenv(text)

    settings = load(layout.environ(**DEVELOPMENT))

    assert value_of(settings, name) == expected


def test_dotenv_crlf_leaves_no_cr(layout: Layout) -> None:
    layout.dotenv("REDIS_PASSWORD=crlf-pass\r\nREDIS_HOST=cache\r\n")

    settings = load(layout.environ(**DEVELOPMENT))

    assert "\r" not in settings["REDIS_PASSWORD"].reveal()
    assert "\r" not in settings["REDIS_HOST"]


def test_dotenv_bare_key_is_unset(layout: Layout) -> None:
    layout.dotenv("REDIS_PASSWORD\n")

    record = load(layout.environ(**DEVELOPMENT)).resolved("REDIS_PASSWORD")

    assert record.value is None
    assert record.origin.kind == "default"


def test_dotenv_origin_file_and_line(layout: Layout) -> None:
    path = layout.dotenv("# local settings\nREDIS_HOST=cache.dotenv\n")

    record = load(layout.environ(**DEVELOPMENT)).resolved("REDIS_HOST")

    assert str(record.origin) == f".env REDIS_HOST ({path}:2)"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("REDIS_HOST=cache\n", 1),
        ("\n\nREDIS_HOST=cache\n", 3),
        ("A=1\n\n  \n\tREDIS_HOST=cache\n", 4),
        ("A=1\r\n\r\nREDIS_HOST=cache\r\n", 3),
        ("# one\n\n# three\nREDIS_HOST=cache\n", 4),
    ],
    ids=repr,
)
def test_dotenv_line_number(layout: Layout, text: str, line: int) -> None:
    path = layout.dotenv(text)

    record = load(layout.environ(**DEVELOPMENT)).resolved("REDIS_HOST")

    assert str(record.origin) == f".env REDIS_HOST ({path}:{line})"


def test_dotenv_malformed_line_after_blank(layout: Layout) -> None:
    path = layout.dotenv("REDIS_HOST=cache\n\n\nNOT A BINDING\n")

    error = load_error(layout.environ(**DEVELOPMENT))

    assert str(error.problems[0]) == f".env {path}: line 4 could not be parsed"


@pytest.mark.parametrize(
    "line",
    [
        "REDIS_PASSWORD=p@ss #word",
        "export REDIS_PASSWORD=p@ss\t#word",
        "  REDIS_PASSWORD = a=b #c",
        "REDIS_PASSWORD=p@ss # note 'quoted'",
    ],
)
def test_dotenv_cut_warning_lines(
    layout: Layout, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    layout.dotenv("\n" + line + "\n")
    caplog.set_level(logging.WARNING)

    load(layout.environ(**DEVELOPMENT))

    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"dotenv value cut at '#' setting=REDIS_PASSWORD path={layout.dotenv_path} "
        "line=2"
    ]


def test_dotenv_cut_secret_warns(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    path = layout.dotenv("REDIS_HOST=cache\n\nREDIS_PASSWORD=p@ss #w0rd-tail\n")
    caplog.set_level(logging.WARNING)

    settings = load(layout.environ(**DEVELOPMENT))

    assert settings["REDIS_PASSWORD"].reveal() == "p@ss"
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "setting=REDIS_PASSWORD" in message
    assert f"path={path} line=3" in message
    assert "p@ss" not in caplog.text
    assert "w0rd" not in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        "REDIS_PASSWORD='p@ss #word'",
        'REDIS_PASSWORD="p@ss #word"',
        'REDIS_PASSWORD="a=b #c"',
        "export REDIS_PASSWORD='x=y #z'",
        "REDIS_PASSWORD=p@ss#word",
        "REDIS_HOST=a #b",
    ],
)
def test_dotenv_no_cut_warning(
    layout: Layout, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    layout.dotenv(line + "\n")
    caplog.set_level(logging.WARNING)

    load(layout.environ(**DEVELOPMENT))

    assert caplog.records == []


def test_real_environment_beats_dotenv(layout: Layout) -> None:
    path = layout.dotenv("REDIS_HOST=cache.dotenv\n")

    record = load(layout.environ(**DEVELOPMENT, REDIS_HOST="cache.env")).resolved(
        "REDIS_HOST"
    )

    assert record.value == "cache.env"
    assert str(record.origin) == "env REDIS_HOST"
    assert [str(c.origin) for c in record.shadowed] == [f".env REDIS_HOST ({path}:1)"]


def test_dotenv_not_read_in_production(layout: Layout) -> None:
    layout.dotenv("REDIS_HOST=cache.dotenv\nREDIS_PORT=not-a-port\n")

    settings = load(layout.environ(APP_ENV="production"))

    assert settings["REDIS_HOST"] == "localhost"
    assert settings.resolved("REDIS_HOST").origin.kind == "default"


def test_dotenv_not_read_by_default_env(layout: Layout) -> None:
    layout.dotenv("REDIS_HOST=cache.dotenv\n")

    settings = load(layout.environ())

    assert settings["APP_ENV"] == "production"
    assert settings["REDIS_HOST"] == "localhost"


def test_dotenv_read_in_production_when_listed(layout: Layout) -> None:
    layout.dotenv("REDIS_HOST=cache.dotenv\n")
    environ = layout.environ(APP_ENV="production", CONFIG_SOURCES="env,dotenv")

    settings = load(environ)

    assert settings["REDIS_HOST"] == "cache.dotenv"


def test_dotenv_malformed_line_by_number(layout: Layout) -> None:
    path = layout.dotenv(
        "REDIS_HOST=cache\nTHIS LINE HAS leaked-content-42\nREDIS_PORT=6380\n"
    )

    error = load_error(layout.environ(**DEVELOPMENT))

    assert len(error.problems) == 1
    assert str(error.problems[0]) == f".env {path}: line 2 could not be parsed"
    assert "leaked-content" not in str(error)


def test_dotenv_unterminated_quote(layout: Layout) -> None:
    path = layout.dotenv("REDIS_PASSWORD='half-quoted-s3cr3t\n")

    error = load_error(layout.environ(**DEVELOPMENT))

    assert str(error.problems[0]) == f".env {path}: line 1 could not be parsed"
    assert "s3cr3t" not in str(error)


def test_dotenv_invalid_utf8(layout: Layout) -> None:
    layout.dotenv_path.write_bytes(b"REDIS_HOST=caf\xe9\n")

    error = load_error(layout.environ(**DEVELOPMENT))

    assert len(error.problems) == 1
    assert f"cannot read {layout.dotenv_path}" in str(error.problems[0])


def test_dotenv_path_is_directory(layout: Layout) -> None:
    layout.dotenv_path.mkdir()

    error = load_error(layout.environ(**DEVELOPMENT))

    assert [str(p) for p in error.problems] == [
        f".env {layout.dotenv_path}: {layout.dotenv_path} is a directory, not a file"
    ]


def test_dotenv_missing_is_silent(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    settings = load(layout.environ(**DEVELOPMENT))

    assert settings["REDIS_HOST"] == "localhost"
    assert caplog.records == []


def test_dotenv_names_password_file(layout: Layout, tmp_path: Path) -> None:
    named = tmp_path / "password.txt"
    named.write_text("from-named-file\n")
    layout.dotenv(f"REDIS_PASSWORD_FILE={named}\n")

    settings = load(layout.environ(**DEVELOPMENT))

    assert settings["REDIS_PASSWORD"].reveal() == "from-named-file"


def test_load_leaves_os_environ_alone(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout.dotenv("REDIS_PASSWORD=dotenv-only-pass\nREDIS_HOST=dotenv-host\n")
    layout.secret_file("redis_username", "file-only-user\n")
    for name, value in layout.environ(**DEVELOPMENT).items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)

    settings = load_from_os_environ()

    assert settings["REDIS_HOST"] == "dotenv-host"
    assert settings["REDIS_USERNAME"] == "file-only-user"
    assert dict(os.environ) == before
    child = subprocess.run(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    inherited = json.loads(child.stdout)
    assert "REDIS_PASSWORD" not in inherited
    assert "REDIS_HOST" not in inherited
    assert "REDIS_USERNAME" not in inherited
    assert "dotenv-only-pass" not in child.stdout


def load_from_os_environ() -> object:
    import config

    return config.load_settings()


def test_dotenv_fifo_rejected(layout: Layout) -> None:
    os.mkfifo(layout.dotenv_path)

    error = load_error(layout.environ(APP_ENV="development"))

    assert f"{layout.dotenv_path} is not a regular file" in str(error)


def test_dotenv_too_large_rejected(layout: Layout) -> None:
    layout.dotenv("# padding\n" * (MAX_DOTENV_BYTES // 10 + 1))

    error = load_error(layout.environ(APP_ENV="development"))

    assert f"{layout.dotenv_path} is larger than 1024 KiB" in str(error)


def test_unread_dotenv_warns(layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    # APP_ENV in the file itself does not turn the file on.
    layout.dotenv("APP_ENV=development\nREDIS_PORT=6390\n")

    with caplog.at_level(logging.WARNING):
        settings = load(layout.environ())

    assert settings["REDIS_PORT"] == 6379
    assert f"dotenv file not read path={layout.dotenv_path}" in caplog.text


def test_bootstrap_key_in_dotenv_warns(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    layout.dotenv("SECRETS_DIR=/elsewhere\n")

    with caplog.at_level(logging.WARNING):
        settings = load(layout.environ(APP_ENV="development"))

    assert settings["SECRETS_DIR"] == str(layout.secrets_dir)
    assert "dotenv setting ignored setting=SECRETS_DIR" in caplog.text


def test_absent_dotenv_no_warning(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load(layout.environ())

    assert "dotenv" not in caplog.text
