"""Fixtures for the service tests: settings as secret files, and gunicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.app.service import GunicornService

GunicornFactory = Callable[..., GunicornService]

# The ACL rules of a least-privilege counter user. The service counts with INCRBY
# and /readyz sends PING. INCR is allowed as well, as a counter user may expect.
COUNTER_ACL = "~hits +incr +incrby +ping"


def write_secrets(directory: Path, values: Mapping[str, str]) -> Path:
    """Write one file per secret, named by the lower-cased setting, mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        path = directory / name.lower()
        path.write_text(value + "\n")
        path.chmod(0o600)

    return directory


@pytest.fixture
def gunicorn_factory(tmp_path: Path) -> Iterator[GunicornFactory]:
    """Return `make(settings, workers=1) -> GunicornService`, started and ready.

    `settings` is the service's whole environment apart from PATH, HOME, LANG,
    HTTP_HOST and HTTP_PORT. Every service made is stopped after the test.
    """
    services: list[GunicornService] = []

    def make(settings: Mapping[str, str], workers: int = 1) -> GunicornService:
        service = GunicornService(tmp_path / f"gunicorn-{len(services)}", settings)
        services.append(service)
        service.start(workers=workers)
        return service

    yield make
    for service in services:
        service.stop()
