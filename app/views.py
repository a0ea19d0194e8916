"""HTTP routes: the counter, liveness and readiness."""

from __future__ import annotations

import logging
import math
from typing import Any

import redis
from flask import Blueprint, Response, current_app

from config import schema as s
from config.leases import DynamicCredentials

from .store import Store

logger = logging.getLogger(__name__)

bp = Blueprint("counter", __name__)

UNAVAILABLE = "Service Unavailable: the counter's store cannot be reached.\n"


def _store() -> Store:
    store: Store = current_app.extensions["store"]
    return store


@bp.get("/")
def hello() -> Response:
    key = current_app.extensions["settings"][s.COUNTER_KEY]
    try:
        count = _store().incr(key)
    except redis.RedisError as error:
        # redis-py messages name the host and the failure, never a password.
        logger.warning(
            "counter update failed error=%s: %s", type(error).__name__, error
        )
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
