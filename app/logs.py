"""Logging for the service: configured once, to stdout."""

from __future__ import annotations

import logging
import sys

from config import Settings

logger = logging.getLogger(__name__)

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send records to stdout at `level`, unless the root logger is set up."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs every request URL at DEBUG, and Vault lease ids are in them.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))


def log_settings(settings: Settings) -> None:
    """Log one line per setting with its source; secrets print as a mask."""
    for record in settings.records():
        logger.info(
            "setting name=%s value=%s source=%s",
            record.name,
            record.value,
            record.origin,
        )
