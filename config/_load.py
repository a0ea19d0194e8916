"""Build the sources from the environment, read them, and apply precedence."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import schema as s
from ._fields import FALSE_WORDS, Field, is_loopback
from ._model import Findings, Origin, Problem
from ._resolve import Resolved, Settings, resolve
from ._vault import VaultConfig
from .errors import SettingsError
from .sources import DotenvSource, EnvSource, FileSource, VaultSource

logger = logging.getLogger(__name__)

DEFAULT_ORDER = ("files", "vault", "env")
DEVELOPMENT_ORDER = ("files", "vault", "env", "dotenv")
# Sources of the settings that reach Vault, even when CONFIG_SOURCES leaves
# them out, because otherwise `CONFIG_SOURCES=vault` could never find VAULT_ADDR.
CONNECTION_SOURCES = ("files", "env")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    fields: Sequence[Field[Any]] = s.SETTINGS,
) -> Settings:
    """Resolve every setting, or raise `SettingsError` listing every problem.

    Nothing is written to `os.environ`: values from files, Vault and .env stay
    in the returned object, so child processes never inherit them.
    """
    env = dict(os.environ if environ is None else environ)
    boot, order, problems = _bootstrap(env, fields)
    findings, dotenv_values = _read_local_sources(env, boot, order, fields)

    vault = _vault_source(boot, order, findings, fields)
    if vault is not None:
        findings["vault"] = vault.collect(fields)

    ordered = [findings[name] for name in order if name in findings]
    connection = [findings[name] for name in _connection_order(order)]
    rest = [f for f in fields if not f.env_only and f.vault]
    resolved, rest_problems = resolve(rest, ordered)
    connection_resolved, connection_problems = resolve(
        _connection_fields(fields), connection
    )
    resolved.update(connection_resolved)
    resolved.update(boot)
    problems += rest_problems + connection_problems
    problems += _cross_check(resolved, env, dotenv_values)
    problems += _unused_vault_problems(boot, resolved)

    if problems:
        # Both resolves see the problems of every source they read.
        raise SettingsError(list(dict.fromkeys(problems)))

    settings = Settings({f.name: resolved[f.name] for f in fields})
    _warn_exposed_secrets(settings)
    _warn_unread_dotenv(settings, order, dotenv_values, fields)
    return settings


def source_order(settings: Settings) -> tuple[str, ...]:
    """Return the source order in force for a loaded `settings`."""
    order: tuple[str, ...] | None = settings[s.CONFIG_SOURCES]
    if order is not None:
        return order
    if settings[s.APP_ENV] == "development":
        return DEVELOPMENT_ORDER
    return DEFAULT_ORDER


def _connection_fields(fields: Sequence[Field[Any]]) -> list[Field[Any]]:
    return [f for f in fields if not f.vault and not f.env_only]


def _connection_order(order: Sequence[str]) -> list[str]:
    """Return the source order for the settings that configure Vault."""
    local = [name for name in order if name != "vault"]
    return local + [name for name in CONNECTION_SOURCES if name not in local]


def _bootstrap(
    env: Mapping[str, str], fields: Sequence[Field[Any]]
) -> tuple[dict[str, Resolved], tuple[str, ...], list[Problem]]:
    """Resolve the bootstrap settings from env, and the source order they select."""
    boot_fields = [f for f in fields if f.env_only]
    boot, problems = resolve(boot_fields, [EnvSource(env).collect(boot_fields)])
    if problems:
        # NOTE: without valid bootstrap settings the other sources' places and
        # order are unknown, so only the process environment is checked, to
        # report its problems in the same error.
        return boot, ("env",), problems

    return boot, source_order(Settings(boot)), []


def _read_local_sources(
    env: Mapping[str, str],
    boot: Mapping[str, Resolved],
    order: Sequence[str],
    fields: Sequence[Field[Any]],
) -> tuple[dict[str, Findings], dict[str, str]]:
    """Read files, env and .env, and return their findings and the .env bindings."""
    findings: dict[str, Findings] = {}
    variables: dict[str, str] = dict(env)
    dotenv_values: dict[str, str] = {}

    if "dotenv" in order:
        dotenv = DotenvSource(Path(boot[s.DOTENV_PATH.name].value))
        findings["dotenv"] = dotenv.collect(fields)
        dotenv_values = dotenv.values
        # `<NAME>_FILE` may come from .env too, below the real environment.
        variables = {**dotenv.values, **env}
    # Files and env are read for the Vault connection settings even when the
    # order leaves them out; for those settings only.
    connection = _connection_fields(fields)
    secrets_dir = boot[s.SECRETS_DIR.name]
    files = FileSource(
        Path(secrets_dir.value), variables, directory_origin=secrets_dir.origin
    )
    findings["files"] = files.collect(fields if "files" in order else connection)
    usable = [f for f in fields if not f.env_only]
    findings["env"] = EnvSource(env).collect(usable if "env" in order else connection)

    return findings, dotenv_values


def _vault_source(
    boot: Mapping[str, Resolved],
    order: Sequence[str],
    findings: Mapping[str, Findings],
    fields: Sequence[Field[Any]],
) -> VaultSource | None:
    """Resolve the Vault connection settings from the other sources."""
    if "vault" not in order:
        return None

    ordered = [findings[name] for name in _connection_order(order)]
    resolved, problems = resolve(_connection_fields(fields), ordered)
    if problems:
        # Problems are reported again, with the rest, by the full resolve.
        return None
    addr = resolved[s.VAULT_ADDR.name].value
    if addr is None or resolved[s.VAULT_KV_PATH.name].value is None:
        return None

    def value(fld: Field[Any]) -> Any:
        return resolved[fld.name].value

    config = vault_config(value)
    return VaultSource(
        config,
        mount=value(s.VAULT_KV_MOUNT),
        path=value(s.VAULT_KV_PATH),
        kv_version=value(s.VAULT_KV_VERSION),
    )


def vault_config(value: Any, secret_id_file: str | None = None) -> VaultConfig:
    """Build a `VaultConfig` from a getter such as `Settings.__getitem__`."""
    return VaultConfig(
        secret_id_file=secret_id_file,
        addr=value(s.VAULT_ADDR),
        token=value(s.VAULT_TOKEN),
        role_id=value(s.VAULT_ROLE_ID),
        secret_id=value(s.VAULT_SECRET_ID),
        approle_mount=value(s.VAULT_APPROLE_MOUNT),
        namespace=value(s.VAULT_NAMESPACE),
        cacert=value(s.VAULT_CACERT),
        timeout=value(s.VAULT_TIMEOUT),
        retry_seconds=value(s.VAULT_RETRY_SECONDS),
    )


def vault_config_of(settings: Settings) -> VaultConfig:
    """Build the `VaultConfig` of loaded settings, tracking the secret id's file."""
    origin = settings.resolved(s.VAULT_SECRET_ID).origin
    return vault_config(settings.__getitem__, secret_id_file=origin.path)


def _cross_check(
    resolved: Mapping[str, Resolved],
    env: Mapping[str, str],
    dotenv_values: Mapping[str, str],
) -> list[Problem]:
    """Check rules that span settings. Skips settings that failed to resolve."""
    problems = _debug_problems(resolved)
    problems += _flask_debug_problems(resolved, env)
    problems += _redis_url_problems(env, dotenv_values)
    problems += _vault_problems(resolved)
    return problems


def _debug_problems(resolved: Mapping[str, Resolved]) -> list[Problem]:
    problems: list[Problem] = []
    debug = resolved.get(s.APP_DEBUG.name)
    host = resolved.get(s.HTTP_HOST.name)
    app_env = resolved.get(s.APP_ENV.name)

    if debug is not None and debug.value and app_env is not None:
        if app_env.value == "production":
            reason = (
                "debug mode is not allowed when APP_ENV=production; "
                "set APP_ENV=development for local debugging"
            )
            problems.append(Problem(s.APP_DEBUG.name, debug.origin, reason))
        elif host is not None and not is_loopback(host.value):
            reason = (
                f"debug mode is not allowed with HTTP_HOST={host.value}, because "
                "the debugger runs code sent to it; bind to 127.0.0.1"
            )
            problems.append(Problem(s.APP_DEBUG.name, debug.origin, reason))

    return problems


def _flask_debug_problems(
    resolved: Mapping[str, Resolved], env: Mapping[str, str]
) -> list[Problem]:
    # `flask run` would turn the debugger on from FLASK_DEBUG, past APP_DEBUG.
    flask_debug = env.get("FLASK_DEBUG", "").strip().lower()
    app_env = resolved.get(s.APP_ENV.name)
    if flask_debug in ("", *FALSE_WORDS) or app_env is None:
        return []
    if app_env.value != "production":
        return []

    reason = (
        "is set, and `flask run` would turn the debugger on from it; the service "
        "reads APP_DEBUG, and debug mode is not allowed when APP_ENV=production"
    )
    return [Problem("FLASK_DEBUG", Origin("env", "FLASK_DEBUG"), reason)]


def _redis_url_problems(
    env: Mapping[str, str], dotenv_values: Mapping[str, str]
) -> list[Problem]:
    url_origin = None
    if env.get("REDIS_URL"):
        url_origin = Origin("env", "REDIS_URL")
    elif dotenv_values.get("REDIS_URL"):
        url_origin = Origin(".env", "REDIS_URL")
    if url_origin is None:
        return []

    reason = (
        "is not read: a URL would carry the password in a non-secret value; "
        "set REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_USERNAME, REDIS_TLS and "
        "REDIS_PASSWORD (or REDIS_PASSWORD_FILE) instead"
    )
    return [Problem("REDIS_URL", url_origin, reason)]


def _vault_problems(resolved: Mapping[str, Resolved]) -> list[Problem]:
    """Reject Vault settings that would be ignored without VAULT_ADDR.

    Ignoring them would start the service without the values it expects from
    Vault, for example when the file that should set VAULT_ADDR is missing.
    """
    problems: list[Problem] = []
    addr = resolved.get(s.VAULT_ADDR.name)
    if addr is None or addr.value:
        return problems

    role = resolved.get(s.VAULT_DB_ROLE.name)
    if role is not None and role.value:
        reason = "needs VAULT_ADDR, because Vault issues the Redis credentials"
        problems.append(Problem(s.VAULT_DB_ROLE.name, role.origin, reason))
    path = resolved.get(s.VAULT_KV_PATH.name)
    if path is not None and path.value:
        reason = "needs VAULT_ADDR, because the settings at this path come from Vault"
        problems.append(Problem(s.VAULT_KV_PATH.name, path.origin, reason))

    return problems


def _unused_vault_problems(
    boot: Mapping[str, Resolved], resolved: Mapping[str, Resolved]
) -> list[Problem]:
    """Reject a CONFIG_SOURCES that names vault when no KV path is configured."""
    sources = boot.get(s.CONFIG_SOURCES.name)
    if sources is None or not sources.value or "vault" not in sources.value:
        return []
    addr = resolved.get(s.VAULT_ADDR.name)
    path = resolved.get(s.VAULT_KV_PATH.name)
    if addr is None or path is None or (addr.value and path.value):
        return []

    reason = (
        "names vault, but VAULT_ADDR and VAULT_KV_PATH are not both set, so no "
        "setting could come from Vault; set them or remove vault from the list"
    )
    return [Problem(s.CONFIG_SOURCES.name, sources.origin, reason)]


def _warn_unread_dotenv(
    settings: Settings,
    order: Sequence[str],
    dotenv_values: Mapping[str, str],
    fields: Sequence[Field[Any]],
) -> None:
    """Warn about a .env that is present but not read, or bootstrap keys in it."""
    path = Path(settings[s.DOTENV_PATH])
    if "dotenv" not in order:
        if path.is_file():
            logger.warning(
                "dotenv file not read path=%s: it is read only when APP_ENV="
                "development is set in the environment (not in the file), or "
                "when CONFIG_SOURCES lists dotenv",
                path,
            )
        return

    for fld in fields:
        if fld.env_only and fld.name in dotenv_values:
            logger.warning(
                "dotenv setting ignored setting=%s path=%s: it decides where "
                "settings come from, so only the environment sets it",
                fld.name,
                path,
            )


def _warn_exposed_secrets(settings: Settings) -> None:
    if settings[s.APP_ENV] != "production":
        return
    for record in settings.records():
        if record.secret and record.origin.kind == "env":
            logger.warning(
                "secret read from an environment variable setting=%s: "
                "`docker inspect` and /proc show environment variables; "
                "use %s_FILE or a file in SECRETS_DIR instead",
                record.name,
                record.name,
            )
