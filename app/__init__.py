"""The hit counter: Flask + Redis, with every setting from `config`.

Serve it with `gunicorn -c python:app.gunicorn_conf 'app:create_app()'`.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response
from werkzeug.exceptions import HTTPException, InternalServerError

from config import Settings
from config import schema as s

from .logs import configure_logging, log_settings
from .startup import startup_settings
from .store import make_pool, static_credentials
from .views import bp

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the service. Settings are loaded here, once, unless given."""
    if settings is None:
        settings = startup_settings()
    else:
        configure_logging(settings[s.LOG_LEVEL])
        log_settings(settings)

    app = Flask(__name__)
    app.config.update(DEBUG=settings[s.APP_DEBUG], PROPAGATE_EXCEPTIONS=False)
    app.extensions["settings"] = settings

    credentials = static_credentials(settings)
    pool = make_pool(settings, credentials)
    app.extensions["redis"] = redis.Redis(connection_pool=pool)
    app.register_blueprint(bp)
    app.register_error_handler(InternalServerError, _internal_error)

    logger.info(
        "service ready redis=%s:%s debug=%s",
        settings[s.REDIS_HOST],
        settings[s.REDIS_PORT],
        app.debug,
    )
    return app


def _internal_error(error: HTTPException) -> Response:
    # The original exception is logged by Flask; the client gets no details.
    return Response("Internal Server Error\n", status=500, mimetype="text/plain")
