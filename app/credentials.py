"""Redis credential providers: static settings, or a Vault lease per process."""

from __future__ import annotations

from typing import Protocol

import redis
from redis.credentials import CredentialProvider

from config import CredentialsError, Secret
from config.leases import DynamicCredentials


class CredentialsUnavailable(redis.ConnectionError):
    """Raised to redis-py when no valid Redis credentials are held."""


class Credentials(Protocol):
    """The credential provider interface that `Store` uses."""

    @property
    def generation(self) -> int: ...

    def get_credentials(self) -> tuple[str] | tuple[str, str]: ...
    def refresh(self, seen_generation: int) -> None: ...
    def confirm(self, generation: int) -> None: ...
    def expired(self) -> bool: ...


class StaticCredentials(CredentialProvider):
    """A username and password resolved once at startup; they never change."""

    generation = 0

    def __init__(self, username: str | None, password: Secret | None) -> None:
        self._username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        password = self._password.reveal() if self._password is not None else ""
        if self._username:
            return (self._username, password)
        return (password,)

    def refresh(self, seen_generation: int) -> None:
        # Static credentials cannot be replaced, so the caller re-raises its error.
        return

    def confirm(self, generation: int) -> None:
        return

    def expired(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"StaticCredentials(username={self._username!r}, password=<masked>)"


class LeaseCredentials(CredentialProvider):
    """Hands redis-py the current Vault lease's user each time it connects."""

    def __init__(self, dynamic: DynamicCredentials) -> None:
        self.dynamic = dynamic

    @property
    def generation(self) -> int:
        return self.dynamic.generation

    def get_credentials(self) -> tuple[str, str]:
        try:
            lease = self.dynamic.current()
        except CredentialsError as error:
            raise CredentialsUnavailable(str(error)) from None
        return (lease.username, lease.password.reveal())

    def refresh(self, seen_generation: int) -> None:
        try:
            self.dynamic.refresh(seen_generation)
        except CredentialsError as error:
            raise CredentialsUnavailable(str(error)) from None

    def confirm(self, generation: int) -> None:
        self.dynamic.confirm(generation)

    def expired(self) -> bool:
        return self.dynamic.expired()

    def __repr__(self) -> str:
        return f"LeaseCredentials(path={self.dynamic.path!r})"
