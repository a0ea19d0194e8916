"""The sources settings are read from, one module each."""

from __future__ import annotations

from .dotenv import DotenvSource
from .env import EnvSource
from .files import FileSource
from .vault import VaultSource

__all__ = ["DotenvSource", "EnvSource", "FileSource", "VaultSource"]
