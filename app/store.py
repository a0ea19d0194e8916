"""The Redis pool and the commands the service sends.

Credentials reach redis-py only through a `CredentialProvider`, which redis-py
calls each time it opens a connection, so rotated credentials need no change
here. Each connection records the credential generation it logged in with.
The pool reconnects one from an older generation before handing it out, so
after a rotation every command runs as the new user.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7.0
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from config import Settings
from config import schema as s

from .credentials import Credentials, LeaseCredentials, StaticCredentials

logger = logging.getLogger(__name__)


class _GenerationTracking:
    """Mixin recording the credential generation a connection authenticated with."""

    auth_generation = -1
    credential_provider: Any

    def on_connect_check_health(self, check_health: bool = True) -> None:
        # NOTE: redis-py 5 to 8 authenticate in this method; the generation is
        # read first, so a rotation during the handshake marks it stale.
        generation = getattr(self.credential_provider, "generation", 0)
        super().on_connect_check_health(check_health)  # type: ignore[misc]
        self.auth_generation = generation


class TrackedConnection(_GenerationTracking, redis.Connection):
    pass


class TrackedSSLConnection(_GenerationTracking, redis.SSLConnection):
    pass


class RotatingPool(redis.ConnectionPool):
    """A pool that retires connections authenticated with old credentials."""

    def ensure_connection(self, connection: Any) -> None:
        provider = self.connection_kwargs.get("credential_provider")
        current = getattr(provider, "generation", 0)
        stale = getattr(connection, "auth_generation", current) != current
        # Expired credentials are not used even where Redis still accepts
        # them (a sealed Vault deletes no users): the reconnect then fails.
        expired = provider is not None and provider.expired()
        if (stale or expired) and connection._sock is not None:
            connection.disconnect()
        super().ensure_connection(connection)


def static_credentials(settings: Settings) -> StaticCredentials | None:
    """Return a provider for the configured user, or None when Redis has no AUTH."""
    username = settings[s.REDIS_USERNAME]
    password = settings[s.REDIS_PASSWORD]
    if username is None and password is None:
        return None
    return StaticCredentials(username, password)


def make_pool(settings: Settings, credentials: Credentials | None) -> RotatingPool:
    """Build the connection pool. redis-py itself retries nothing.

    An INCR whose connection broke after it was sent may already have
    counted, so only `Store` decides what is safe to send again.
    """
    options: dict[str, Any] = {
        "host": settings[s.REDIS_HOST],
        "port": settings[s.REDIS_PORT],
        "db": settings[s.REDIS_DB],
        "credential_provider": credentials,
        "socket_timeout": settings[s.REDIS_SOCKET_TIMEOUT],
        "socket_connect_timeout": settings[s.REDIS_CONNECT_TIMEOUT],
        "max_connections": settings[s.REDIS_MAX_CONNECTIONS],
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
        "connection_class": TrackedConnection,
    }
    if MaintNotificationsConfig is not None:
        # Maintenance push notifications are for managed Redis clusters; off,
        # the pool reconnects a socket the server closed instead of reading it.
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if settings[s.REDIS_TLS]:
        options["connection_class"] = TrackedSSLConnection
        options["ssl_cert_reqs"] = "required"
        if settings[s.REDIS_TLS_CA_FILE]:
            options["ssl_ca_certs"] = settings[s.REDIS_TLS_CA_FILE]

    return RotatingPool(**options)


class Store:
    """Runs the counter's commands, one round trip each.

    A command is sent again at most once, after new Vault credentials, and
    only when Redis rejected the old ones without running it: AUTH failed
    before the command was written, or Redis replied NOAUTH/WRONGPASS. A
    connection that drops after the command was written is not retried,
    because the INCR may have counted.
    """

    def __init__(self, pool: RotatingPool, credentials: Credentials | None) -> None:
        self.pool = pool
        self.credentials = credentials

    def incr(self, key: str) -> int:
        count: int = self._execute("INCRBY", key, 1)
        return count

    def ping(self) -> bool:
        return bool(self._execute("PING"))

    def _execute(self, *command: Any) -> Any:
        for attempt in (1, 2):
            generation = self.credentials.generation if self.credentials else 0
            try:
                return self._send(command)
            except redis.AuthenticationError:
                # Static credentials cannot be replaced, so resending is futile.
                if attempt == 2 or not isinstance(self.credentials, LeaseCredentials):
                    raise
                # DynamicCredentials logs the replacement itself.
                logger.debug("redis rejected credentials, refreshing and retrying")
                self.credentials.refresh(generation)
        raise AssertionError("unreachable")

    def _send(self, command: tuple[Any, ...]) -> Any:
        # Connecting and AUTH happen in get_connection, before anything is sent.
        connection: Any = self.pool.get_connection()
        try:
            connection.send_command(*command)
            reply = connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            raise
        finally:
            self.pool.release(connection)

        if self.credentials is not None:
            self.credentials.confirm(connection.auth_generation)
        return reply

    def __repr__(self) -> str:
        return f"Store({self.pool!r})"
