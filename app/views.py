"""HTTP routes: the counter, liveness and readiness."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app

from config import schema as s
from config.leases import DynamicCredentials

from .store import Store

logger = logging.getLogger(__name__)

bp = Blueprint("counter", __name__)

UNAVAILABLE = "Service Unavailable: the counter's store cannot be reached.\n"


class _FailureLog:
    """Logs failed counter updates, at most `burst` lines per interval.

    While Redis is down every request fails, and one line per request would
    bury the rest of the log. The next logged line counts the ones left out.
    """

    def __init__(self, interval: float = 10.0, burst: int = 5) -> None:
        self.interval = interval
        self.burst = burst
        self._window_start = -math.inf
        self._logged = 0
        self._suppressed = 0

    def log(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._logged = 0
        if self._logged >= self.burst:
            self._suppressed += 1
            return
        # redis-py messages name the host and the failure, never a password.
        logger.warning(
            "counter update failed error=%s: %s suppressed=%d",
            type(error).__name__,
            error,
            self._suppressed,
        )
        self._logged += 1
        self._suppressed = 0


_failures = _FailureLog()


def _store() -> Store:
    store: Store = current_app.extensions["store"]
    return store


@bp.get("/")
def hello() -> Response:
    key = current_app.extensions["settings"][s.COUNTER_KEY]
    try:
        count = _store().incr(key)
    except redis.RedisError as error:
        _failures.log(error)
        return Response(UNAVAILABLE, status=503, mimetype="text/plain")

    return Response(f"Hello World! {count} times.\n", mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    body: dict[str, Any] = {"status": "ready", "redis": "ok"}
    lease: DynamicCredentials | None = current_app.extensions.get("lease")
    if lease is not None:
        status = lease.status()
        body["credentials"] = {
            "state": status.state,
            # Rounded up, so credentials still valid never show 0 seconds left.
            "seconds_left": math.ceil(status.seconds_left),
            "lease": status.lease,
        }
        if status.state == "expired":
            body["status"] = "unavailable"
            return body, 503
        if status.state == "degraded":
            body["status"] = "degraded"

    try:
        _store().ping()
    except redis.RedisError as error:
        logger.warning("readiness check failed error=%s", type(error).__name__)
        body.update(status="unavailable", redis=type(error).__name__)
        return body, 503

    return body, 200
