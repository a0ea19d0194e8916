"""Settings loaded once per process tree.

gunicorn's config module loads them in the master to bind and size the pool.
Workers are forked from it and reuse the same object, so settings are read and
logged once at startup and never per request.
"""

from __future__ import annotations

from config import Settings, load_settings
from config import schema as s

from .logs import configure_logging, log_settings

_settings: Settings | None = None


def startup_settings() -> Settings:
    """Return the settings of this process tree, loading them on first use."""
    global _settings
    if _settings is None:
        # Warnings from the load itself go out in the service's format too;
        # the configured level applies from the next line on.
        configure_logging("INFO")
        settings = load_settings()
        configure_logging(settings[s.LOG_LEVEL])
        log_settings(settings)
        _settings = settings
    return _settings
