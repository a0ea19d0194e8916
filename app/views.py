"""HTTP routes: the counter, liveness and readiness."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, current_app

from config import schema as s

logger = logging.getLogger(__name__)

bp = Blueprint("counter", __name__)

UNAVAILABLE = "Service Unavailable: the counter's store cannot be reached.\n"


def _client() -> redis.Redis:
    client: redis.Redis = current_app.extensions["redis"]
    return client


@bp.get("/")
def hello() -> Response:
    key = current_app.extensions["settings"][s.COUNTER_KEY]
    try:
        count = _client().incr(key)
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
def readyz() -> tuple[dict[str, str], int]:
    try:
        _client().ping()
    except redis.RedisError as error:
        logger.warning("readiness check failed error=%s", type(error).__name__)
        return {"status": "unavailable", "redis": type(error).__name__}, 503

    return {"status": "ready", "redis": "ok"}, 200
