"""Every setting the service reads, declared once.

Environment names are the canonical names. Secret files and Vault keys use the
lower-cased name, so `REDIS_PASSWORD` is the file `/run/secrets/redis_password`
and the key `redis_password`.
"""

from __future__ import annotations

from typing import Any

from ._fields import (
    Field,
    choice,
    int_in_range,
    parse_bool,
    parse_host,
    parse_http_url,
    parse_log_level,
    parse_nonempty,
    parse_port,
    parse_secret,
    parse_token,
    parse_vault_path,
    positive_float,
)
from ._secret import Secret

SOURCE_NAMES = ("files", "vault", "env", "dotenv")


def parse_sources(text: str) -> tuple[str, ...]:
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown or not names:
        raise ValueError(
            f"is not a comma-separated list of sources from: {', '.join(SOURCE_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError("names a source more than once")
    return names


# Bootstrap: where the other settings come from. Process environment only.
APP_ENV = Field(
    "APP_ENV",
    choice("production", "development"),
    "production",
    "Profile. `development` reads .env by default and allows debug mode.",
    env_only=True,
)
CONFIG_SOURCES: Field[tuple[str, ...] | None] = Field(
    "CONFIG_SOURCES",
    parse_sources,
    None,
    "Source order, highest first; defaults to files,vault,env "
    "(files,vault,env,dotenv when APP_ENV=development).",
    env_only=True,
)
SECRETS_DIR = Field(
    "SECRETS_DIR",
    parse_nonempty,
    "/run/secrets",
    "Directory of secret files, one per setting, named by lower-cased setting.",
    env_only=True,
)
DOTENV_PATH = Field(
    "DOTENV_PATH",
    parse_nonempty,
    ".env",
    "The .env file read when `dotenv` is among CONFIG_SOURCES.",
    env_only=True,
)

# Redis.
REDIS_HOST = Field(
    "REDIS_HOST",
    parse_host,
    "localhost",
    "Redis host name or IP address.",
    aliases=("HOST_REDIS",),
)
REDIS_PORT = Field(
    "REDIS_PORT", parse_port, 6379, "Redis TCP port.", aliases=("PORT_REDIS",)
)
REDIS_DB = Field("REDIS_DB", int_in_range(0), 0, "Redis logical database number.")
REDIS_USERNAME: Field[str | None] = Field(
    "REDIS_USERNAME",
    parse_nonempty,
    None,
    "Redis ACL user; unset uses the `default` user (password-only AUTH).",
)
REDIS_PASSWORD: Field[Secret | None] = Field(
    "REDIS_PASSWORD",
    parse_secret,
    None,
    "Redis password (secret); unset sends no AUTH.",
    secret=True,
)
REDIS_TLS = Field("REDIS_TLS", parse_bool, False, "Connect to Redis over TLS.")
REDIS_TLS_CA_FILE: Field[str | None] = Field(
    "REDIS_TLS_CA_FILE",
    parse_nonempty,
    None,
    "CA bundle for Redis TLS; unset uses the system store.",
)
REDIS_SOCKET_TIMEOUT = Field(
    "REDIS_SOCKET_TIMEOUT",
    positive_float,
    2.0,
    "Seconds to wait for a Redis reply.",
)
REDIS_CONNECT_TIMEOUT = Field(
    "REDIS_CONNECT_TIMEOUT",
    positive_float,
    2.0,
    "Seconds to wait for a Redis connection.",
)
REDIS_MAX_CONNECTIONS = Field(
    "REDIS_MAX_CONNECTIONS",
    int_in_range(1),
    20,
    "Connection pool size per worker process.",
)
COUNTER_KEY = Field("COUNTER_KEY", parse_nonempty, "hits", "Redis key of the counter.")

# HTTP and process.
HTTP_HOST = Field(
    "HTTP_HOST",
    parse_host,
    "127.0.0.1",
    "Address gunicorn binds to.",
    aliases=("HOST_RUN",),
)
HTTP_PORT = Field("HTTP_PORT", parse_port, 8000, "Port gunicorn binds to.")
WEB_CONCURRENCY = Field(
    "WEB_CONCURRENCY", int_in_range(1, 64), 2, "Number of gunicorn worker processes."
)
HTTP_TIMEOUT = Field(
    "HTTP_TIMEOUT",
    positive_float,
    30.0,
    "Seconds before gunicorn restarts a silent worker.",
)
APP_DEBUG = Field(
    "APP_DEBUG",
    parse_bool,
    False,
    "Flask debug mode. Refused when APP_ENV=production or bound off loopback.",
    aliases=("DEBUG",),
)
LOG_LEVEL = Field("LOG_LEVEL", parse_log_level, "INFO", "Log level of the service.")
METRICS_PORT: Field[int | None] = Field(
    "METRICS_PORT",
    parse_port,
    None,
    "Serve Prometheus metrics on this port on HTTP_HOST; unset serves /metrics.",
)

# Vault: how to reach it. These cannot come from Vault itself.
VAULT_ADDR: Field[str | None] = Field(
    "VAULT_ADDR",
    parse_http_url,
    None,
    "Vault address, for the KV source and for dynamic Redis credentials.",
    vault=False,
)
VAULT_TOKEN: Field[Secret | None] = Field(
    "VAULT_TOKEN",
    parse_token,
    None,
    "Vault token (secret) for token auth.",
    secret=True,
    vault=False,
)
VAULT_ROLE_ID: Field[str | None] = Field(
    "VAULT_ROLE_ID",
    parse_nonempty,
    None,
    "AppRole role id; setting it selects AppRole auth.",
    vault=False,
)
VAULT_SECRET_ID: Field[Secret | None] = Field(
    "VAULT_SECRET_ID",
    parse_secret,
    None,
    "AppRole secret id (secret); pass it as a file with VAULT_SECRET_ID_FILE.",
    secret=True,
    vault=False,
)
VAULT_APPROLE_MOUNT = Field(
    "VAULT_APPROLE_MOUNT",
    parse_vault_path,
    "approle",
    "Mount path of the AppRole auth method.",
    vault=False,
)
VAULT_NAMESPACE: Field[str | None] = Field(
    "VAULT_NAMESPACE",
    parse_vault_path,
    None,
    "Vault Enterprise namespace.",
    vault=False,
)
VAULT_CACERT: Field[str | None] = Field(
    "VAULT_CACERT",
    parse_nonempty,
    None,
    "CA bundle that signs Vault's TLS certificate.",
    vault=False,
)
VAULT_KV_MOUNT = Field(
    "VAULT_KV_MOUNT",
    parse_vault_path,
    "secret",
    "Mount of the KV engine holding the service's settings.",
    vault=False,
)
VAULT_KV_PATH: Field[str | None] = Field(
    "VAULT_KV_PATH",
    parse_vault_path,
    None,
    "Path of the service's secret within VAULT_KV_MOUNT, e.g. hitcounter; "
    "setting it (with VAULT_ADDR) turns the Vault KV source on.",
    vault=False,
)
VAULT_KV_VERSION = Field(
    "VAULT_KV_VERSION",
    int_in_range(1, 2),
    2,
    "KV engine version: 2 (versioned) or 1.",
    vault=False,
)
VAULT_TIMEOUT = Field(
    "VAULT_TIMEOUT",
    positive_float,
    5.0,
    "Seconds to wait for one Vault request.",
    vault=False,
)
VAULT_RETRY_SECONDS = Field(
    "VAULT_RETRY_SECONDS",
    positive_float,
    15.0,
    "Seconds to keep retrying an unreachable or sealed Vault at startup.",
    vault=False,
)
VAULT_DB_MOUNT = Field(
    "VAULT_DB_MOUNT",
    parse_vault_path,
    "database",
    "Mount of the database secrets engine.",
    vault=False,
)
VAULT_DB_ROLE: Field[str | None] = Field(
    "VAULT_DB_ROLE",
    parse_vault_path,
    None,
    "Database role; setting it makes Vault issue the Redis credentials.",
    vault=False,
)

SETTINGS: tuple[Field[Any], ...] = tuple(
    value for value in globals().values() if isinstance(value, Field)
)

__all__ = ["SETTINGS", "SOURCE_NAMES", "parse_sources"]
__all__ += [f.name for f in SETTINGS]
