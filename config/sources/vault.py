"""Vault KV: every key at one path, read in one request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from .. import _vault
from .._fields import Field
from .._model import Candidate, Findings, Origin, Problem
from .._secret import Secret
from ..errors import VaultError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class VaultSource:
    """Reads `<mount>/<path>` from KV v2 (or v1) after logging in.

    Keys are the lower-cased setting names, like secret files. A Vault that is
    configured but fails gives a problem, never an empty result, so the load
    fails closed instead of falling back to lower sources.
    """

    name = "vault"

    def __init__(
        self, config: _vault.VaultConfig, mount: str, path: str, kv_version: int
    ) -> None:
        self.config = config
        self.mount = mount
        self.path = path
        self.kv_version = kv_version

    @property
    def locator(self) -> str:
        if self.kv_version == 2:
            return f"{self.mount}/data/{self.path}"
        return f"{self.mount}/{self.path}"

    def collect(self, fields: Sequence[Field[Any]]) -> Findings:
        findings = Findings(self.name)
        try:
            data, version = self._read()
        except VaultError as error:
            findings.problems.append(Problem(None, "vault", str(error)))
            return findings

        by_key = {f.key: f for f in fields if f.vault and not f.env_only}
        suffix = f" (version {version})" if version is not None else ""
        seen: dict[str, str] = {}
        for key, value in data.items():
            fld = by_key.get(key.lower())
            if fld is None:
                logger.debug("vault key is not a setting key=%s", key)
                continue
            origin = Origin("vault", f"{self.locator}#{key}{suffix}")
            if fld.name in seen:
                reason = f"keys {seen[fld.name]!r} and {key!r} both set it; keep one"
                findings.problems.append(Problem(fld.name, origin, reason))
                continue
            seen[fld.name] = key
            text = _text(value)
            if text is None:
                kind = "null" if value is None else f"a JSON {_json_kind(value)}"
                reason = f"the value is {kind}; expected a string"
                findings.problems.append(Problem(fld.name, origin, reason))
                continue
            raw: str | Secret = Secret(text) if fld.secret else text
            findings.candidates.append(Candidate(fld.name, raw, origin))

        return findings

    def _read(self) -> tuple[dict[str, Any], int | None]:
        client = _vault.make_client(self.config)
        _vault.login(client, self.config)
        action = f"read of {self.locator}"

        if self.kv_version == 2:
            response = self._call(
                client,
                action,
                lambda: client.secrets.kv.v2.read_secret_version(
                    path=self.path,
                    mount_point=self.mount,
                    raise_on_deleted_version=True,
                ),
            )
            body = response.get("data") or {}
            version = (body.get("metadata") or {}).get("version")
            data = body.get("data")
        else:
            response = self._call(
                client,
                action,
                lambda: client.secrets.kv.v1.read_secret(
                    path=self.path, mount_point=self.mount
                ),
            )
            version = None
            data = response.get("data")

        if not isinstance(data, dict):
            raise VaultError(
                f"vault {action} at {self.config.addr}: the response contains no "
                f"key/value data; check that {self.mount} is a KV version "
                f"{self.kv_version} mount (VAULT_KV_VERSION)"
            )
        return data, version

    def _call(self, client: hvac.Client, action: str, request: Callable[[], T]) -> T:
        """Run a KV read. After a 404 or 403, name the mount's KV version if it differs.

        A token whose policy grants only the path of the other KV version gets
        403 rather than 404, so both replies are checked.
        """
        rejected = False

        def read() -> T:
            nonlocal rejected
            try:
                return request()
            except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
                rejected = True
                raise

        try:
            return _vault.call(self.config, action, read)
        except VaultError as error:
            actual = self._mount_version(client) if rejected else None
            if actual is None or actual == self.kv_version:
                raise
            message = (
                f"{error}; {self.mount} is a KV version {actual} mount, "
                f"so set VAULT_KV_VERSION={actual}"
            )
            raise VaultError(message) from None

    def _mount_version(self, client: hvac.Client) -> int | None:
        """Return the KV version of the mount, or None when Vault does not return it."""
        # The Vault CLI reads this endpoint to choose its KV version. A token
        # may read it when its policy grants any path under the mount.
        url = f"/v1/sys/internal/ui/mounts/{self.mount}"
        try:
            response = _vault.translate(
                self.config, "mount lookup", lambda: client.adapter.get(url)
            )
        except VaultError:
            return None
        mount = response.get("data") or {}
        if mount.get("type") != "kv":
            return None
        # A KV mount created without a version option is version 1.
        version = str((mount.get("options") or {}).get("version") or "1")
        return int(version) if version in ("1", "2") else None


def _text(value: object) -> str | None:
    """Return a KV value as text: strings as they are, numbers and booleans."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _json_kind(value: object) -> str:
    return "object" if isinstance(value, dict) else "array"
