"""An authenticated hvac client built from resolved settings, with bounded retry.

Every hvac, requests and TLS error is re-raised as `VaultError` with a message
of ours (the address, the path, the state) and without its cause, because
hvac's own messages can carry request bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from ._secret import Secret
from .errors import VaultError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class VaultConfig:
    """How to reach and log in to Vault."""

    addr: str
    token: Secret | None = None
    role_id: str | None = None
    secret_id: Secret | None = None
    # Read again at each login, so a secret id rotated in its file is used.
    secret_id_file: str | None = None
    approle_mount: str = "approle"
    namespace: str | None = None
    cacert: str | None = None
    timeout: float = 5.0
    retry_seconds: float = 15.0

    @property
    def auth_method(self) -> str:
        return "approle" if self.role_id else "token"

    @property
    def login_path(self) -> str:
        if self.auth_method == "approle":
            return f"auth/{self.approle_mount}/login"
        return "auth/token/lookup-self"


class Transient(VaultError):
    """Raised for a failure that may pass: unreachable, sealed, 5xx, 429."""


def make_client(config: VaultConfig) -> hvac.Client:
    """Build an unauthenticated client with TLS verification set explicitly.

    hvac reads VAULT_CACERT from the environment once, when it is imported, so
    a value that arrived later (from .env or a secret file) would be ignored.
    Passing `verify` ourselves makes the resolved setting the one in force.
    """
    verify: str | bool = True
    if config.cacert:
        if not Path(config.cacert).is_file():
            message = f"VAULT_CACERT: CA bundle {config.cacert} does not exist"
            raise VaultError(message)
        verify = config.cacert

    # Only our settings decide where requests go and what they carry: no
    # HTTP(S)_PROXY, ~/.netrc or REQUESTS_CA_BUNDLE from the environment.
    session = requests.Session()
    session.trust_env = False
    # hvac takes `verify` from a session it is given, over its own argument.
    session.verify = verify
    # An explicit empty token stops hvac from reading VAULT_TOKEN or
    # ~/.vault-token behind our back. A redirect could send the token or the
    # secret id to another host, so none is followed.
    return hvac.Client(
        url=config.addr,
        token="",
        verify=verify,
        timeout=config.timeout,
        namespace=config.namespace or None,
        session=session,
        allow_redirects=False,
    )


@dataclass(frozen=True)
class TokenInfo:
    """The lifetime of the token a login produced."""

    ttl: float  # seconds; 0 for a token that never expires
    renewable: bool


def login(client: hvac.Client, config: VaultConfig, *, retry: bool = True) -> TokenInfo:
    """Authenticate `client` with a token or AppRole and return its lifetime."""
    run = call if retry else translate
    if config.auth_method == "approle":
        return _approle_login(client, config, run)

    if config.token is None:
        raise VaultError(
            f"vault at {config.addr}: no credentials; set VAULT_TOKEN "
            "(or VAULT_TOKEN_FILE) or VAULT_ROLE_ID with VAULT_SECRET_ID_FILE"
        )
    client.token = config.token.reveal()
    response = run(
        config, "token lookup at auth/token/lookup-self", client.auth.token.lookup_self
    )
    data = response["data"]
    return TokenInfo(float(data.get("ttl") or 0), bool(data.get("renewable")))


def _approle_login(client: hvac.Client, config: VaultConfig, run: Any) -> TokenInfo:
    where = f"vault approle login at {config.addr}/v1/{config.login_path}"
    if config.secret_id is None:
        raise VaultError(
            f"{where}: VAULT_ROLE_ID is set but no secret id was found; "
            "set VAULT_SECRET_ID_FILE to the file holding it"
        )
    secret_id = _current_secret_id(config)
    try:
        response = run(
            config,
            f"approle login at {config.login_path}",
            lambda: client.auth.approle.login(
                role_id=config.role_id,
                secret_id=secret_id.reveal(),
                mount_point=config.approle_mount,
                use_token=True,
            ),
        )
    except Transient:
        raise
    except VaultError:
        # Vault returns 400 for a wrong, expired or used-up secret id.
        raise VaultError(
            f"{where}: the role id or secret id was rejected (wrong, expired or "
            "used up); issue a new secret id"
        ) from None
    auth = response["auth"]
    return TokenInfo(
        float(auth.get("lease_duration") or 0), bool(auth.get("renewable"))
    )


def call(config: VaultConfig, action: str, request: Callable[[], T]) -> T:
    """Run one Vault request, retrying transient failures until the deadline."""
    deadline = time.monotonic() + config.retry_seconds
    delay = 0.25
    attempt = 1

    while True:
        try:
            return translate(config, action, request)
        except Transient as error:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VaultError(
                    f"{error} (gave up after {attempt} attempts)"
                ) from None
            logger.warning(
                "vault request failed, retrying action=%r attempt=%d error=%s",
                action,
                attempt,
                error,
            )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
            attempt += 1


def translate(config: VaultConfig, action: str, request: Callable[[], T]) -> T:
    """Run one Vault request and turn its failure into our error type."""
    where = f"vault {action} at {config.addr}"
    try:
        return request()
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as error:
        failure = _classify(config, where, error)
    # Raised outside the handler, so the new error keeps no __context__: the
    # original's arguments can hold the token or the secret id.
    raise failure


def _classify(config: VaultConfig, where: str, error: Exception) -> VaultError:
    """Describe a failed request by its kind and status, never by its text."""
    if isinstance(error, requests.exceptions.SSLError):
        hint = "check VAULT_CACERT" if config.cacert else "set VAULT_CACERT"
        return VaultError(f"{where}: TLS verification failed; {hint}")
    if isinstance(error, requests.exceptions.ConnectionError):
        return Transient(f"{where}: unreachable (connection failed)")
    if isinstance(error, requests.exceptions.Timeout):
        return Transient(f"{where}: timed out after {config.timeout:g} s")
    if isinstance(error, requests.exceptions.RequestException):
        return VaultError(f"{where}: request failed ({type(error).__name__})")
    assert isinstance(error, hvac.exceptions.VaultError)
    return _classify_status(config, where, error)


def _classify_status(
    config: VaultConfig, where: str, error: hvac.exceptions.VaultError
) -> VaultError:
    if isinstance(error, hvac.exceptions.VaultDown):
        return Transient(f"{where}: Vault is sealed or unavailable (503)")
    transient = (
        hvac.exceptions.InternalServerError,
        hvac.exceptions.BadGateway,
        hvac.exceptions.RateLimitExceeded,
    )
    if isinstance(error, transient):
        return Transient(f"{where}: server error ({_status(error)})")
    if isinstance(error, hvac.exceptions.VaultNotInitialized):
        return VaultError(f"{where}: Vault is not initialized (501)")
    if isinstance(error, hvac.exceptions.Forbidden):
        return VaultError(
            f"{where}: permission denied (403); the {config.auth_method} "
            "credentials are invalid or their policy does not allow this path"
        )
    if isinstance(error, hvac.exceptions.Unauthorized):
        return VaultError(f"{where}: not authorized (401)")
    if isinstance(error, hvac.exceptions.InvalidPath):
        return VaultError(f"{where}: path not found (404)")
    if isinstance(error, hvac.exceptions.InvalidRequest):
        return VaultError(f"{where}: invalid request (400)")
    return VaultError(f"{where}: failed ({_status(error)})")


def _status(error: hvac.exceptions.VaultError) -> str:
    # The exception's text can include the request body, so report only codes.
    errors = getattr(error, "errors", None) or ()
    code = getattr(error, "status_code", None) or "unexpected"
    safe = [e for e in errors if isinstance(e, str) and len(e) < 80]
    return f"{code}: {'; '.join(safe)}" if safe else str(code)


def _current_secret_id(config: VaultConfig) -> Secret:
    """Return the secret id from its file as it is now, or the loaded one."""
    assert config.secret_id is not None
    if config.secret_id_file is None:
        return config.secret_id
    try:
        text = Path(config.secret_id_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        # The loaded value may still be valid; the login reports it if not.
        reason = getattr(error, "strerror", None) or "invalid UTF-8"
        logger.warning(
            "secret id file not read again path=%s error=%s, using the loaded one",
            config.secret_id_file,
            reason,
        )
        return config.secret_id
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            text = text[: -len(ending)]
            break
    return Secret(text) if text else config.secret_id
