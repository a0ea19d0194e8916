"""Fixtures for the lease tests: a bootstrapped Redis + OpenBao, and gunicorn.

With the default TTLs (3 s, max 6 s) each worker renews its lease about two
seconds after it was issued and gets a capped renewal, and so new credentials,
about four seconds after it was issued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.leases.stack import Gunicorn, Stack, start_stack

DEFAULT_TTL = 3
MAX_TTL = 6

StackFactory = Callable[..., Stack]
GunicornFactory = Callable[..., Gunicorn]


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[StackFactory]:
    """Return `make(default_ttl=3, max_ttl=6, bootstrap_args=()) -> Stack`.

    Every Redis and OpenBao server made is stopped after the test.
    """
    stacks: list[Stack] = []

    def make(
        default_ttl: int = DEFAULT_TTL, max_ttl: int = MAX_TTL, **options: Any
    ) -> Stack:
        directory = tmp_path / f"stack-{len(stacks)}"
        stack = start_stack(
            directory, default_ttl=default_ttl, max_ttl=max_ttl, **options
        )
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.bao.stop()
        stack.redis.stop()


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    """Redis and OpenBao configured by the bootstrap with a 3 s TTL, max 6 s."""
    return stack_factory()


@pytest.fixture
def gunicorn_factory(tmp_path: Path) -> Iterator[GunicornFactory]:
    """Return `make(stack, workers=2, args=(), start=True, ...) -> Gunicorn`.

    With `start=True` it returns once every worker has credentials and
    /readyz returns 200. Every gunicorn made is stopped after the test.
    """
    services: list[Gunicorn] = []

    def make(stack: Stack, *, start: bool = True, **options: Any) -> Gunicorn:
        service = Gunicorn(tmp_path / f"gunicorn-{len(services)}", stack, **options)
        services.append(service)
        if start:
            service.start()
        return service

    yield make
    for service in services:
        service.stop()
