"""The Redis client, built from settings.

Credentials reach redis-py only through a `CredentialProvider`, which redis-py
asks each time it opens a connection, so credentials that change later (a
Vault lease) need no change here.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry

from config import Secret, Settings
from config import schema as s

logger = logging.getLogger(__name__)


class StaticCredentials(CredentialProvider):
    """A username and password resolved once at startup."""

    def __init__(self, username: str | None, password: Secret | None) -> None:
        self._username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self._password.reveal() if self._password is not None else ""
        if self._username:
            return (self._username, password)
        return (password,)

    def __repr__(self) -> str:
        return f"StaticCredentials(username={self._username!r}, password=<masked>)"


def static_credentials(settings: Settings) -> CredentialProvider | None:
    """Return a provider for the configured user, or None when Redis has no AUTH."""
    username = settings[s.REDIS_USERNAME]
    password = settings[s.REDIS_PASSWORD]
    if username is None and password is None:
        return None
    return StaticCredentials(username, password)


def make_pool(
    settings: Settings, credentials: CredentialProvider | None
) -> redis.ConnectionPool:
    """Build the connection pool. Commands are not retried by redis-py.

    An INCR whose connection broke may already have counted, so a blind retry
    could count twice; the caller decides what is safe to retry.
    """
    options: dict[str, object] = {
        "host": settings[s.REDIS_HOST],
        "port": settings[s.REDIS_PORT],
        "db": settings[s.REDIS_DB],
        "credential_provider": credentials,
        "socket_timeout": settings[s.REDIS_SOCKET_TIMEOUT],
        "socket_connect_timeout": settings[s.REDIS_CONNECT_TIMEOUT],
        "max_connections": settings[s.REDIS_MAX_CONNECTIONS],
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings[s.REDIS_TLS]:
        options["connection_class"] = redis.SSLConnection
        options["ssl_cert_reqs"] = "required"
        if settings[s.REDIS_TLS_CA_FILE]:
            options["ssl_ca_certs"] = settings[s.REDIS_TLS_CA_FILE]

    return redis.ConnectionPool(**options)  # type: ignore[arg-type]
