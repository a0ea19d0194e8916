"""Declarations of settings and the parsers that type their values.

Nothing here does I/O. A parser takes the text a source found and returns the
typed value or raises `ValueError` with a reason that never quotes the input,
because the caller decides whether the input may be shown.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._secret import Secret

T = TypeVar("T")

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Field(Generic[T]):
    """One setting: its canonical name, how to type it and where it may come from.

    `name` is the environment variable. The secret-file and Vault key is the
    lower-cased name (`REDIS_PASSWORD` is read from the file `redis_password`).
    `aliases` are older environment names that are still read, after `name`.
    """

    name: str
    parse: Callable[[str], T]
    default: T
    help: str
    secret: bool = False
    aliases: tuple[str, ...] = ()
    # Bootstrap settings decide where the other settings come from, so they are
    # read from the process environment only.
    env_only: bool = False
    # Settings that configure Vault cannot come from Vault itself.
    vault: bool = True

    @property
    def key(self) -> str:
        """The file name and Vault key for this setting."""
        return self.name.lower()


class HiddenValueError(ValueError):
    """Raised by a parser whose input may hold a credential, so it is not shown."""


def _reject_control(text: str) -> None:
    # A newline or escape in a logged value would forge or garble log lines.
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ValueError("contains a control character (newline, tab, escape...)")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        raise ValueError("is not valid UTF-8")


def parse_nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    _reject_control(text)
    return text


def parse_secret(text: str) -> Secret:
    if text == "":
        raise ValueError("is empty")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        # os.environ stores undecodable bytes as surrogates.
        raise ValueError("is not valid UTF-8")
    return Secret(text)


def parse_token(text: str) -> Secret:
    """Parse a credential sent in an HTTP header, such as a Vault token."""
    secret = parse_secret(text)
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ValueError(
            "contains white space or a control character; a token file must "
            "hold the token and at most one trailing newline"
        )
    return secret


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    accepted = ", ".join(TRUE_WORDS + FALSE_WORDS)
    raise ValueError(f"is not a boolean (accepted: {accepted}, in any case)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("is not an integer") from None


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        number = parse_int(text)
        if number < low or (high is not None and number > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ValueError(f"is out of range (expected an integer {bound})")
        return number

    return parse


def parse_port(text: str) -> int:
    try:
        port = int(text.strip(), 10)
    except ValueError:
        raise ValueError("is not an integer (a TCP port is 1 to 65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError("is out of range (a TCP port is 1 to 65535)")
    return port


def positive_float(text: str) -> float:
    try:
        number = float(text.strip())
    except ValueError:
        raise ValueError("is not a number") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a positive, finite number of seconds")
    return number


def choice(*words: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in words:
            raise ValueError(f"is not one of: {', '.join(words)}")
        return word

    return parse


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in logging.getLevelNamesMapping():
        names = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"is not a log level (expected one of {names})")
    return level


def parse_host(text: str) -> str:
    host = text.strip()
    if not host:
        raise ValueError("must not be empty")
    _reject_control(host)
    if any(char.isspace() or char in "/@?#" for char in host):
        raise ValueError("is not a host name or IP address")
    return host


def parse_http_url(text: str) -> str:
    url = text.strip()
    _reject_control(url)
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        # user:password@ would be logged and shown wherever the address is.
        raise HiddenValueError(
            "contains user credentials (user:password@); use VAULT_TOKEN or "
            "AppRole instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return url.rstrip("/")


def parse_vault_path(text: str) -> str:
    _reject_control(text)
    path = text.strip().strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError("is not a Vault path (expected segments like app/web)")
    return path


def is_loopback(host: str) -> bool:
    """Return True when `host` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
