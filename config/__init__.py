"""A secrets-aware configuration layer for a 12-factor service.

Each setting is resolved from, highest precedence first: secret files, Vault,
environment variables, a .env file (development only by default), defaults.
The order can be changed with CONFIG_SOURCES.

The core modules (`_fields`, `_model`, `_resolve`, `_secret`) do no I/O; the
modules under `sources/` and `_vault` do.
"""

from __future__ import annotations

from ._fields import Field
from ._load import load_settings, source_order
from ._model import Origin, Problem
from ._resolve import Resolved, Settings
from ._secret import MASK, Secret, json_default
from .errors import ConfigError, CredentialsError, SettingsError, VaultError
from .schema import SETTINGS

__all__ = [
    "MASK",
    "SETTINGS",
    "ConfigError",
    "CredentialsError",
    "Field",
    "Origin",
    "Problem",
    "Resolved",
    "Secret",
    "Settings",
    "SettingsError",
    "VaultError",
    "json_default",
    "load_settings",
    "source_order",
]
