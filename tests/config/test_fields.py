"""Parsers that type each setting: one table from input text to value or error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config import SETTINGS, Field, Secret, _fields
from config._fields import (
    choice,
    int_in_range,
    is_loopback,
    parse_bool,
    parse_host,
    parse_http_url,
    parse_log_level,
    parse_nonempty,
    parse_port,
    parse_secret,
    parse_vault_path,
    positive_float,
)
from config.schema import parse_sources

VALID = [
    (parse_bool, "on", True),
    (parse_bool, "OFF", False),
    (parse_port, "1", 1),
    (parse_port, " 6379 ", 6379),
    (parse_port, "65535", 65535),
    (int_in_range(0), "0", 0),
    (int_in_range(1, 64), "64", 64),
    (positive_float, "2", 2.0),
    (positive_float, "0.25", 0.25),
    (positive_float, "1e-3", 0.001),
    (parse_log_level, "debug", "DEBUG"),
    (parse_log_level, " Warning ", "WARNING"),
    (parse_host, " cache.internal ", "cache.internal"),
    (parse_host, "10.0.0.7", "10.0.0.7"),
    (parse_host, "::1", "::1"),
    (parse_http_url, "https://vault.internal:8200/", "https://vault.internal:8200"),
    (parse_http_url, "http://127.0.0.1:8200", "http://127.0.0.1:8200"),
    (parse_vault_path, "/app/web/", "app/web"),
    (parse_vault_path, "hitcounter", "hitcounter"),
    (parse_nonempty, " x ", " x "),
    (choice("production", "development"), "Development", "development"),
    (parse_sources, "env,files", ("env", "files")),
    (parse_sources, " Vault , files,env ", ("vault", "files", "env")),
    (parse_sources, "files,vault,env,dotenv", ("files", "vault", "env", "dotenv")),
]

INVALID = [
    (parse_bool, "fasle", "is not a boolean"),
    (parse_bool, "", "is not a boolean"),
    (parse_port, "0", "is out of range"),
    (parse_port, "65536", "is out of range"),
    (parse_port, "80.0", "is not an integer"),
    (parse_port, "0x50", "is not an integer"),
    (parse_port, "", "is not an integer"),
    (int_in_range(0), "-1", "expected an integer >= 0"),
    (int_in_range(1, 64), "65", "expected an integer from 1 to 64"),
    (positive_float, "0", "must be a positive, finite number"),
    (positive_float, "-1", "must be a positive, finite number"),
    (positive_float, "inf", "must be a positive, finite number"),
    (positive_float, "nan", "must be a positive, finite number"),
    (positive_float, "ten", "is not a number"),
    (parse_log_level, "LOUD", "is not a log level"),
    (parse_host, "  ", "must not be empty"),
    (parse_host, "cache host", "is not a host name or IP address"),
    (parse_host, "cache/0", "is not a host name or IP address"),
    (parse_host, "user@cache", "is not a host name or IP address"),
    (parse_http_url, "vault:8200", "is not an http:// or https:// URL"),
    (parse_http_url, "ftp://vault", "is not an http:// or https:// URL"),
    (parse_vault_path, "/", "is not a Vault path"),
    (parse_vault_path, "app//web", "is not a Vault path"),
    (parse_vault_path, "app/../sys", "is not a Vault path"),
    (parse_nonempty, " ", "must not be empty"),
    (parse_secret, "", "is empty"),
    (choice("production", "development"), "staging", "is not one of"),
    (parse_sources, "", "is not a comma-separated list"),
    (parse_sources, "env,bogus", "is not a comma-separated list"),
    (parse_sources, "env,ENV", "names a source more than once"),
]


def parser_id(value: Any) -> str:
    return getattr(value, "__qualname__", repr(value))


@pytest.mark.parametrize(("parse", "text", "expected"), VALID, ids=parser_id)
def test_parser_accepts(parse: Callable[[str], Any], text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("parse", "text", "reason"), INVALID, ids=parser_id)
def test_parser_rejects(parse: Callable[[str], Any], text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        parse(text)

    # The caller decides whether the input may be shown, so reasons never quote it.
    if len(text.strip()) >= 4:
        assert text.strip() not in str(raised.value)


def test_secret_parser_wraps() -> None:
    value = parse_secret(" s3cr3t ")

    assert isinstance(value, Secret)
    assert value.reveal() == " s3cr3t "


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.7", False),
        ("cache.internal", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_setting_names_unique() -> None:
    names = [f.name for f in SETTINGS]
    aliases = [alias for f in SETTINGS for alias in f.aliases]

    assert len(set(names)) == len(names)
    assert not set(aliases) & set(names)


def test_secret_settings_declared() -> None:
    secret = {f.name for f in SETTINGS if f.secret}

    assert secret == {"REDIS_PASSWORD", "VAULT_TOKEN", "VAULT_SECRET_ID"}


WITH_DEFAULT = [f for f in SETTINGS if f.default is not None]


@pytest.mark.parametrize("fld", WITH_DEFAULT, ids=lambda f: f.name)
def test_default_survives_parse(fld: Field[Any]) -> None:
    # A default written as text must read back as itself, so `explain` shows
    # a value that the same setting would accept from a source.
    text = str(fld.default)
    if isinstance(fld.default, bool):
        text = text.lower()

    assert fld.parse(text) == fld.default


@pytest.mark.parametrize(
    "text", ["tok\n", " tok", "tok en", "tok\r", "tok\x1b"], ids=repr
)
def test_token_rejects_white_space(text: str) -> None:
    # requests rejects such a header with a message that quotes it whole.
    with pytest.raises(ValueError, match="white space or a control character"):
        _fields.parse_token(text)


def test_token_accepts_plain_token() -> None:
    assert _fields.parse_token("hvs.CAESIabc").reveal() == "hvs.CAESIabc"


def test_url_with_credentials_hidden() -> None:
    with pytest.raises(_fields.HiddenValueError, match="user credentials"):
        _fields.parse_http_url("http://user:hunter2@127.0.0.1:8200")


@pytest.mark.parametrize(
    "text", ["http://127.0.0.1:99999", "http://", "http://host/?a=b"], ids=repr
)
def test_url_invalid_forms(text: str) -> None:
    with pytest.raises(ValueError):
        _fields.parse_http_url(text)


@pytest.mark.parametrize("text", ["hits\nforged line", "cache\x1b[31m", "a\x00b"])
def test_text_rejects_control_characters(text: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        _fields.parse_nonempty(text)
