"""Short-lived Redis credentials from Vault's database secrets engine.

Each process has its own lease, obtained after fork and renewed by its own
thread at two thirds of its TTL. New credentials replace it when Vault rejects
a renewal or caps the TTL (the role's max TTL is near), and the lease is
revoked when the process stops.

The Vault token is renewed the same way. When it can no longer be renewed, an
AppRole login is repeated, and new credentials follow, because a lease ends
with the token that created it.

While Vault is down the current credentials keep serving until they expire.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions

from . import _vault
from ._secret import Secret
from .errors import CredentialsError, VaultError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RENEW_FRACTION = 2 / 3
# How long an old lease stays valid after rotation, so that a command already
# sent on a connection authenticated as the old user can finish.
REVOKE_GRACE_SECONDS = 2.0
MIN_REFRESH_INTERVAL = 1.0
MAX_RETRY_DELAY = 30.0
EXPIRED_RETRY_DELAY = 5.0


def short_lease_id(lease_id: str) -> str:
    """Return the lease path with the first 8 characters of its random id."""
    path, _, suffix = lease_id.rpartition("/")
    return f"{path}/{suffix[:8]}..." if path else f"{suffix[:8]}..."


@dataclass(frozen=True)
class Lease:
    """One set of Redis credentials and the Vault lease behind it."""

    lease_id: str = field(repr=False)
    username: str
    password: Secret
    duration: float
    renewable: bool
    obtained: float
    generation: int

    @property
    def short_id(self) -> str:
        return short_lease_id(self.lease_id)

    @property
    def expires_at(self) -> float:
        return self.obtained + self.duration

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.monotonic() if now is None else now)


@dataclass(frozen=True)
class CredentialStatus:
    """Health of the credentials, for readiness and metrics."""

    state: str  # "ok", "degraded" (Vault failing) or "expired"
    seconds_left: float
    lease: str | None
    error: str | None = None


class LeaseObserver(Protocol):
    """Receives lifecycle events, for example to update metrics."""

    def vault_request(self, action: str, ok: bool) -> None: ...
    def renewed(self) -> None: ...
    def rotated(self) -> None: ...
    def renewal_failed(self) -> None: ...
    def expires_in(self, seconds: float) -> None: ...


class _NullObserver:
    def vault_request(self, action: str, ok: bool) -> None:
        pass

    def renewed(self) -> None:
        pass

    def rotated(self) -> None:
        pass

    def renewal_failed(self) -> None:
        pass

    def expires_in(self, seconds: float) -> None:
        pass


class DynamicCredentials:
    """Redis credentials issued by `<mount>/creds/<role>`, kept valid per process.

    Call `start()` in each worker after fork, or let `current()` start it on
    first use. Nothing obtained in a parent process is used in a child.
    """

    def __init__(
        self,
        config: _vault.VaultConfig,
        mount: str,
        role: str,
        observer: LeaseObserver | None = None,
        *,
        revoke_grace: float = REVOKE_GRACE_SECONDS,
    ) -> None:
        self.config = config
        self.mount = mount
        self.role = role
        self.observer: LeaseObserver = observer or _NullObserver()
        self.revoke_grace = revoke_grace
        self._reset()
        # A forked child must not renew, revoke or reuse the parent's lease,
        # token or HTTP connections, so it drops them and starts over.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_ref(ref))

    @property
    def path(self) -> str:
        return f"{self.mount}/creds/{self.role}"

    def _reset(self) -> None:
        self._pid: int | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: hvac.Client | None = None
        self._token_expires: float | None = None
        self._token_renewable = False
        self._lease: Lease | None = None
        self._generation = 0
        self._retired: list[tuple[Lease, float]] = []
        self._retry_at: float | None = None
        self._retry_delay = 1.0
        self._error: str | None = None
        self._last_refresh = 0.0
        self._expiry_warned = False
        self._closed = False
        self._confirmed = 0
        self._requested_ttl = 0.0
        self._token_ttl = 0.0

    # Public interface ------------------------------------------------------

    def start(self) -> Lease:
        """Log in and obtain the first lease in this process, with retry.

        Raises `CredentialsError` when no credentials can be had before
        the startup retry deadline, so the service fails closed.
        """
        with self._lock:
            if self._pid == os.getpid() and self._lease is not None:
                return self._lease
            self._pid = os.getpid()
            try:
                self._login(retry=True)
                lease = self._issue(retry=True)
            except VaultError as error:
                raise CredentialsError(
                    f"no Redis credentials from {self.path}: {error}"
                ) from None
            self._set_lease(lease)
            self._thread = threading.Thread(
                target=self._run, name="vault-lease", daemon=True
            )
            self._thread.start()

        logger.info(
            "redis credentials issued lease=%s username=%s ttl=%ds renewable=%s",
            lease.short_id,
            lease.username,
            lease.duration,
            lease.renewable,
        )
        return lease

    def current(self) -> Lease:
        """Return valid credentials, starting in this process if needed."""
        if self._closed and self._pid == os.getpid():
            raise CredentialsError(f"credentials from {self.path} were closed")
        if self._pid != os.getpid() or self._lease is None:
            return self.start()
        lease = self._lease
        if lease.remaining() <= 0:
            raise CredentialsError(
                f"Redis credentials from {self.path} expired "
                f"(lease {lease.short_id}); Vault error: {self._error}"
            )
        return lease

    @property
    def generation(self) -> int:
        return self._generation

    def confirm(self, generation: int) -> None:
        """Record that Redis accepted credentials of `generation`."""
        if generation > self._confirmed:
            self._confirmed = generation

    def expired(self) -> bool:
        """Return True when this process has no unexpired credentials."""
        lease = self._lease
        return lease is None or lease.remaining() <= 0

    def refresh(self, seen_generation: int) -> Lease:
        """Replace credentials that Redis rejected, unless already replaced.

        Concurrent callers that saw the same generation share one rotation.
        Credentials that Redis accepted before (then revoked) are replaced at
        once; others at most once per `MIN_REFRESH_INTERVAL`.
        """
        with self._lock:
            lease = self.current()
            if lease.generation != seen_generation:
                return lease
            recent = time.monotonic() - self._last_refresh < MIN_REFRESH_INTERVAL
            if recent and self._confirmed < lease.generation:
                # Credentials that Redis has never accepted are not replaced
                # again at once: a role whose users cannot log in would
                # otherwise cost one new lease per request.
                return lease
            self._last_refresh = time.monotonic()
            logger.warning(
                "redis rejected the credentials, replacing them lease=%s",
                lease.short_id,
            )
            try:
                return self._rotate_once_more_if_transient()
            except VaultError as error:
                self._note_failure(error)
                raise CredentialsError(
                    f"cannot replace Redis credentials from {self.path}: {error}"
                ) from None

    def _rotate_once_more_if_transient(self) -> Lease:
        # A request is waiting, so one quick second try beats a 503: after a
        # Redis restart the plugin's first reply is often a 500 from its stale
        # admin connection, and the next one succeeds.
        try:
            return self._rotate(reason="rejected by Redis")
        except _vault.Transient as error:
            logger.info("credentials read failed, trying once more error=%s", error)
            return self._rotate(reason="rejected by Redis")

    def status(self) -> CredentialStatus:
        lease = self._lease
        if lease is None:
            return CredentialStatus("expired", 0.0, None, self._error)
        left = max(lease.remaining(), 0.0)
        if left <= 0:
            state = "expired"
        elif self._error:
            state = "degraded"
        else:
            state = "ok"
        return CredentialStatus(state, left, lease.short_id, self._error)

    def close(self, *, revoke: bool = True) -> None:
        """Stop renewing and, by default, revoke every lease this process holds."""
        if self._pid != os.getpid():
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not revoke:
            return

        with self._lock:
            leases = [lease for lease, _ in self._retired]
            if self._lease is not None:
                leases.append(self._lease)
            self._retired.clear()
            self._lease = None
        for lease in leases:
            self._revoke(lease)
        if self.config.auth_method == "approle" and self._client is not None:
            # The token was this process's own login; nothing else uses it.
            try:
                self._request("token revoke", self._client.auth.token.revoke_self)
            except VaultError as error:
                logger.debug("token revoke failed error=%s", error)

    # Background thread -----------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._next_delay())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception:  # The thread must outlive any single failure.
                logger.exception("vault lease maintenance failed")
                self._schedule_retry()

    def _next_delay(self) -> float:
        now = time.monotonic()
        times = [t for t in self._due_times() if t is not None]
        if self._retry_at is not None:
            # Work already overdue waits for the retry, not for a busy loop.
            times = [t for t in times if t > now] or [self._retry_at]
        if not times:
            return MAX_RETRY_DELAY
        return min(max(min(times) - now, 0.05), MAX_RETRY_DELAY)

    def _due_times(self) -> list[float | None]:
        lease = self._lease
        due: list[float | None] = [self._retry_at]
        if lease is not None:
            due.append(lease.obtained + lease.duration * RENEW_FRACTION)
            due.append(lease.expires_at)
        due.extend(revoke_at for _, revoke_at in self._retired)
        can_act = self._token_renewable or self.config.auth_method == "approle"
        if self._token_expires is not None and can_act:
            due.append(self._token_renew_at())
        return due

    def _token_renew_at(self) -> float:
        assert self._token_expires is not None
        return self._token_expires - self._token_ttl * (1 - RENEW_FRACTION)

    def _tick(self) -> None:
        now = time.monotonic()
        self._revoke_due(now)
        if self._retry_at is not None and now < self._retry_at:
            self._report_expiry()
            return

        try:
            with self._lock:
                self._maintain(now)
        except VaultError as error:
            self._note_failure(error)
            self._schedule_retry()
        else:
            if self._error is not None:
                logger.info("vault reachable again lease=%s", self._short())
            self._error = None
            self._retry_at = None
            self._retry_delay = 1.0
        self._report_expiry()

    def _maintain(self, now: float) -> None:
        try:
            self._maintain_token(now)
            self._maintain_lease(now)
        except _vault.Transient:
            raise
        except VaultError:
            if self.config.auth_method != "approle" or self._token_valid():
                raise
            # The token expired, for example during an outage, and its leases
            # went with it, so start over with a new login.
            logger.warning("vault token no longer valid, logging in again")
            self._login(retry=False)
            self._rotate(reason="new vault login")

    def _token_valid(self) -> bool:
        """Return False when Vault rejects this process's token itself."""
        try:
            self._request(
                "token lookup", lambda: self._vault().auth.token.lookup_self()
            )
        except _vault.Transient:
            raise
        except VaultError:
            return False
        return True

    def _maintain_token(self, now: float) -> None:
        if self._token_expires is None or now < self._token_renew_at():
            return
        if self._token_renewable:
            data = self._request(
                "token renew", lambda: self._vault().auth.token.renew_self()
            )
            previous_ttl = self._token_ttl
            self._set_token(data["auth"])
            # OpenBao 2.7 warns when it caps the TTL, and the comparison covers
            # replies without that warning.
            if self._token_ttl + 1 < previous_ttl or _mentions_cap(data):
                # Capped by the token's max TTL: renewing again only shrinks it.
                self._token_renewable = False
            lease = self._lease
            # A capped token would take the lease down with it: log in again.
            # One that can still be renewed keeps the lease alive as it is.
            if (
                self._token_renewable
                or lease is None
                or self._token_expires >= lease.expires_at
            ):
                return
            if self.config.auth_method != "approle":
                return
        elif self.config.auth_method != "approle":
            if not self._expiry_warned:
                self._expiry_warned = True
                logger.warning(
                    "vault token cannot be renewed and expires in %ds; "
                    "the Redis credentials end with it",
                    max(self._token_expires - now, 0),
                )
            return

        logger.info("vault token near its end, logging in again")
        self._login(retry=False)
        self._rotate(reason="new vault login")

    def _maintain_lease(self, now: float) -> None:
        lease = self._lease
        if lease is None:
            self._set_lease(self._issue(retry=False))
            return
        if now < lease.obtained + lease.duration * RENEW_FRACTION:
            return
        if not lease.renewable:
            self._rotate(reason="lease not renewable")
            return

        try:
            response = self._request(
                "lease renew",
                lambda: self._vault().sys.renew_lease(
                    lease_id=lease.lease_id, increment=int(self._requested_ttl)
                ),
            )
        except _vault.Transient:
            raise
        except VaultError:
            # Vault has no such lease any more (revoked or expired), so replace it.
            self.observer.renewal_failed()
            self._rotate(reason="renewal rejected")
            return

        granted = float(response.get("lease_duration") or 0)
        capped = granted + 1 < self._requested_ttl or _mentions_cap(response)
        self._lease = Lease(
            lease.lease_id,
            lease.username,
            lease.password,
            granted,
            bool(response.get("renewable")),
            time.monotonic(),
            lease.generation,
        )
        self.observer.renewed()
        if capped:
            # The role's max TTL is near: the first capped reply is the signal
            # to switch, so renewals never shrink towards zero in a loop.
            logger.warning(
                "lease renewal capped by max ttl lease=%s granted=%ds, rotating",
                lease.short_id,
                granted,
            )
            self._rotate(reason="max ttl near")
        else:
            logger.info("lease renewed lease=%s ttl=%ds", lease.short_id, granted)

    # Vault calls -------------------------------------------------------------

    def _vault(self) -> hvac.Client:
        if self._client is None:
            self._client = _vault.make_client(self.config)
        return self._client

    def _request(
        self, action: str, request: Callable[[], T], *, retry: bool = False
    ) -> T:
        try:
            if retry:
                result = _vault.call(self.config, action, request)
            else:
                result = _vault.translate(self.config, action, request)
        except VaultError:
            self.observer.vault_request(action, False)
            raise
        self.observer.vault_request(action, True)
        return result

    def _login(self, *, retry: bool) -> None:
        self._client = None
        action = f"{self.config.auth_method} login"
        try:
            info = _vault.login(self._vault(), self.config, retry=retry)
        except VaultError:
            self.observer.vault_request(action, False)
            raise
        self.observer.vault_request(action, True)
        self._set_token({"lease_duration": info.ttl, "renewable": info.renewable})

    def _set_token(self, auth: dict[str, Any]) -> None:
        ttl = float(auth.get("lease_duration") or 0)
        self._token_renewable = bool(auth.get("renewable"))
        self._token_ttl = ttl
        # A TTL of 0 is a token that never expires (a root token).
        self._token_expires = time.monotonic() + ttl if ttl > 0 else None

    def _issue(self, *, retry: bool) -> Lease:
        response = self._request(
            f"credentials read at {self.path}",
            lambda: self._vault().secrets.database.generate_credentials(
                name=self.role, mount_point=self.mount
            ),
            retry=retry,
        )
        data = response.get("data") or {}
        if not data.get("username") or not data.get("password"):
            raise VaultError(
                f"vault credentials read at {self.path}: the reply has no "
                "username and password; check that VAULT_DB_ROLE names a "
                "role of the Redis database plugin"
            )
        duration = float(response.get("lease_duration") or 0)
        if duration <= 0:
            # Renewing at two thirds of zero would rotate in a tight loop.
            raise VaultError(
                f"vault credentials read at {self.path}: the reply has no lease "
                "duration; check the role's default_ttl"
            )
        self._requested_ttl = duration
        return Lease(
            response["lease_id"],
            data["username"],
            Secret(data["password"]),
            duration,
            bool(response.get("renewable")),
            time.monotonic(),
            self._generation + 1,
        )

    def _rotate(self, *, reason: str) -> Lease:
        old = self._lease
        new = self._issue(retry=False)
        self._set_lease(new)
        self.observer.rotated()
        if old is not None:
            grace = min(self.revoke_grace, max(old.remaining(), 0))
            self._retired.append((old, time.monotonic() + grace))
        logger.info(
            "redis credentials rotated reason=%r lease=%s username=%s previous=%s",
            reason,
            new.short_id,
            new.username,
            old.short_id if old else None,
        )
        self._wake.set()
        return new

    def _set_lease(self, lease: Lease) -> None:
        # The lease first, then its generation: a connection that reads the
        # generation in between is tagged older than its user, so the pool
        # retires it once more than needed, never too few times.
        self._lease = lease
        self._generation = lease.generation

    def _revoke_due(self, now: float) -> None:
        with self._lock:
            due = [lease for lease, at in self._retired if at <= now]
            self._retired = [(lease, at) for lease, at in self._retired if at > now]
        for lease in due:
            self._revoke(lease)

    def _revoke(self, lease: Lease) -> None:
        try:
            self._request(
                "lease revoke",
                # The lease id in the URL lets a policy allow revoking only
                # this role's leases (`sys/leases/revoke/<mount>/creds/<role>/*`).
                lambda: self._vault().adapter.put(
                    f"/v1/sys/leases/revoke/{lease.lease_id}"
                ),
            )
        except VaultError as error:
            # The lease still ends at its TTL; the user then disappears anyway.
            logger.warning(
                "lease revoke failed lease=%s error=%s", lease.short_id, error
            )
            return
        logger.info(
            "lease revoked lease=%s username=%s", lease.short_id, lease.username
        )

    # Failure bookkeeping -----------------------------------------------------

    def _note_failure(self, error: VaultError) -> None:
        first = self._error is None
        self._error = str(error)
        self.observer.renewal_failed()
        if first:
            logger.warning(
                "vault unavailable, serving on current credentials lease=%s "
                "seconds_left=%d error=%s",
                self._short(),
                self.status().seconds_left,
                error,
            )

    def _schedule_retry(self) -> None:
        lease = self._lease
        delay = self._retry_delay
        if lease is not None and lease.remaining() > 0:
            # Try at least a few times before the credentials run out.
            delay = min(delay, max(lease.remaining() / 4, 0.2))
        else:
            # Nothing left to keep alive: back off, but come back soon enough
            # that the service recovers within seconds of Vault.
            delay = min(delay, EXPIRED_RETRY_DELAY)
        self._retry_at = time.monotonic() + delay
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)

    def _report_expiry(self) -> None:
        lease = self._lease
        self.observer.expires_in(max(lease.remaining(), 0) if lease else 0.0)

    def _short(self) -> str | None:
        return self._lease.short_id if self._lease else None


def _mentions_cap(response: dict[str, Any]) -> bool:
    warnings = response.get("warnings") or []
    return any("capped" in str(w) or "max_ttl" in str(w) for w in warnings)


def _capabilities_self(client: hvac.Client, path: str) -> dict[str, Any] | None:
    """Return the token's capabilities on `path`, or None if it may not ask."""
    try:
        reply: dict[str, Any] = client.adapter.post(
            "/v1/sys/capabilities-self", json={"paths": [path]}
        )
    except hvac.exceptions.Forbidden:
        return None

    return reply


def _may_read(reply: dict[str, Any], path: str) -> bool:
    capabilities = reply.get(path) or reply.get("capabilities") or []
    return "read" in capabilities or "root" in capabilities


def _reset_ref(ref: weakref.ref[DynamicCredentials]) -> None:
    credentials = ref()
    if credentials is not None:
        credentials._reset()


def verify_access(config: _vault.VaultConfig, mount: str, role: str) -> None:
    """Log in and check that the token may read `<mount>/creds/<role>`.

    Run once at startup, in the process that will not hold a lease (gunicorn's
    master), so a wrong secret id stops the service before any worker starts,
    and so does a policy without `read`, when the token may call
    sys/capabilities-self. Issues no credentials. Raises `CredentialsError`.
    """
    path = f"{mount}/creds/{role}"
    client = _vault.make_client(config)
    try:
        _vault.login(client, config)
        reply = _vault.call(
            config,
            "capabilities check at sys/capabilities-self",
            lambda: _capabilities_self(client, path),
        )
    except VaultError as error:
        message = f"cannot obtain Redis credentials from {path}: {error}"
        raise CredentialsError(message) from None

    if reply is None:
        # The policy that app.vault_bootstrap writes leaves out Vault's default
        # policy, which grants sys/capabilities-self. The login has succeeded,
        # and a policy without `read` still stops the worker at its first read.
        logger.info(
            "vault policy check skipped: the token may not call "
            "sys/capabilities-self path=%s",
            path,
        )
    elif not _may_read(reply, path):
        raise CredentialsError(
            f"vault {config.auth_method} login succeeded but its policy does not "
            f"allow reading {path}; grant `read` on that path"
        )
    if config.auth_method == "approle":
        # This token was only for the check; each worker logs in for itself.
        try:
            _vault.translate(config, "token revoke", client.auth.token.revoke_self)
        except VaultError as error:
            logger.debug("startup token revoke failed error=%s", error)
