"""gunicorn settings and hooks, taken from the same resolved settings as the app.

Use: `gunicorn -c python:app.gunicorn_conf 'app:create_app()'`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from gunicorn.glogging import Logger

from config import ConfigError
from config import schema as s
from config._load import vault_config_of
from config.leases import verify_access

from .startup import startup_settings

logger = logging.getLogger(__name__)

# gunicorn's Arbiter.WORKER_BOOT_ERROR: the master halts when a worker exits so.
WORKER_BOOT_ERROR = 3

try:
    _settings = startup_settings()
    _role = _settings[s.VAULT_DB_ROLE]
    if _role:
        verify_access(vault_config_of(_settings), _settings[s.VAULT_DB_MOUNT], _role)
except ConfigError as error:
    # gunicorn would print a traceback, but the message alone states the fix.
    print(error, file=sys.stderr)
    raise SystemExit(1) from None

# Workers write metrics here so that one scrape sums them. Set before any
# worker imports prometheus_client, which reads it at import time.
# A directory made here is removed by `on_exit`, but one the caller set is kept.
_own_metrics_dir: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="hitcounter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir

_host = _settings[s.HTTP_HOST]
_port = _settings[s.HTTP_PORT]
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]
workers = _settings[s.WEB_CONCURRENCY]
timeout = int(_settings[s.HTTP_TIMEOUT])
graceful_timeout = 10
loglevel = _settings[s.LOG_LEVEL].lower()
errorlog = "-"
accesslog = "-"
# The URL path without its query string, so tokens in a query never reach logs.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'
# gunicorn 25+ opens a control socket under $HOME; the service does not use it.
control_socket_disable = True


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with control characters in request fields escaped.

    `%(U)s` is the percent-decoded path, so a request for `/%0a...` would
    otherwise write a line of the client's choosing into the access log.
    """

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            key: _escape(value) if isinstance(value, str) else value
            for key, value in atoms.items()
        }


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


logger_class = AccessLogger


def post_worker_init(worker: Any) -> None:
    """Obtain this worker's own Redis lease, after fork; exit if impossible."""
    lease = worker.wsgi.extensions.get("lease")
    if lease is None:
        return
    try:
        lease.start()
    except ConfigError as error:
        logger.error("worker has no Redis credentials, exiting: %s", error)
        # Exit code 3 makes gunicorn stop the whole service, which is right at
        # startup (fail closed). A worker started later to replace one that
        # died must not take the healthy ones down during a Vault outage, so
        # it exits with 1 and gunicorn starts another.
        first_start = worker.age <= workers
        sys.exit(WORKER_BOOT_ERROR if first_start else 1)


def worker_exit(server: Any, worker: Any) -> None:
    """Revoke the worker's leases so Redis users do not pile up."""
    app = getattr(worker, "wsgi", None)
    lease = app.extensions.get("lease") if app is not None else None
    if lease is not None:
        lease.close(revoke=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def when_ready(server: Any) -> None:
    """Serve metrics on METRICS_PORT from the master, when that is set."""
    port = _settings[s.METRICS_PORT]
    if port is None:
        return
    from prometheus_client import start_http_server

    from .metrics import registry

    start_http_server(port, addr=_host, registry=registry())


def on_exit(server: Any) -> None:
    """Remove the metrics directory made at startup, so none piles up in TMPDIR."""
    if _own_metrics_dir is None:
        return
    try:
        shutil.rmtree(_own_metrics_dir)
    except OSError as error:
        logger.warning(
            "metrics directory not removed path=%s error=%s", _own_metrics_dir, error
        )
