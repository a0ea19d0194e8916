"""Exceptions raised by the configuration layer.

No message contains a secret value: problems name the setting, the source and
what was expected, and errors from hvac, requests and redis are re-raised as
ours without their cause where the cause could echo a credential.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._model import Problem


class ConfigError(Exception):
    """Base class for every error raised by `config`."""


class SettingsError(ConfigError):
    """Raised when a load finds problems; lists every problem of that load."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid configuration, {count} {noun}:\n{lines}")


class VaultError(ConfigError):
    """Raised when Vault is unreachable, sealed, denies access or lacks a path."""


class CredentialsError(ConfigError):
    """Raised when no valid Redis credentials can be obtained."""
