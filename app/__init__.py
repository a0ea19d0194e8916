"""The hit counter: Flask + Redis, with every setting from `config`.

Serve it with `gunicorn -c python:app.gunicorn_conf 'app:create_app()'`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, InternalServerError

from config import Settings
from config import schema as s
from config._load import vault_config_of
from config.leases import DynamicCredentials

from .credentials import Credentials, LeaseCredentials
from .logs import configure_logging, log_settings
from .startup import startup_settings
from .store import Store, make_pool, static_credentials
from .views import bp

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the service. Settings are loaded here, once, unless given.

    Vault-issued credentials are not fetched here: with gunicorn's
    `--preload` this runs in the master, and a lease must belong to the
    worker that renews it. Each worker obtains its own after fork.
    """
    if settings is None:
        settings = startup_settings()
    else:
        configure_logging(settings[s.LOG_LEVEL])
        log_settings(settings)

    app = Flask(__name__)
    app.config.update(DEBUG=settings[s.APP_DEBUG], PROPAGATE_EXCEPTIONS=False)
    app.extensions["settings"] = settings

    credentials: Credentials | None
    role = settings[s.VAULT_DB_ROLE]
    if role:
        dynamic = dynamic_credentials(settings, role)
        app.extensions["lease"] = dynamic
        credentials = LeaseCredentials(dynamic)
    else:
        credentials = static_credentials(settings)
    app.extensions["store"] = Store(make_pool(settings, credentials), credentials)

    app.register_blueprint(bp)
    app.register_error_handler(InternalServerError, _internal_error)
    if settings[s.METRICS_PORT] is None:
        app.add_url_rule("/metrics", "metrics", _metrics)

    logger.info(
        "app created redis=%s:%s credentials=%s debug=%s",
        settings[s.REDIS_HOST],
        settings[s.REDIS_PORT],
        "vault" if settings[s.VAULT_DB_ROLE] else "static",
        app.debug,
    )
    return app


def dynamic_credentials(settings: Settings, role: str) -> DynamicCredentials:
    from .metrics import LeaseMetrics

    return DynamicCredentials(
        vault_config_of(settings),
        mount=settings[s.VAULT_DB_MOUNT],
        role=role,
        observer=LeaseMetrics(),
    )


def _metrics() -> Response:
    # Imported on first scrape: prometheus_client picks its multi-process
    # mode from the environment when imported, after gunicorn_conf set it.
    from .metrics import CONTENT_TYPE, render

    return Response(render(), mimetype=None, content_type=CONTENT_TYPE)


def _internal_error(error: HTTPException) -> Response:
    # The original exception is logged by Flask; the client gets no details.
    return Response("Internal Server Error\n", status=500, mimetype="text/plain")
