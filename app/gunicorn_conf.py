"""gunicorn settings, taken from the same resolved settings as the app.

Use: `gunicorn -c python:app.gunicorn_conf 'app:create_app()'`.
"""

from __future__ import annotations

import sys

from config import ConfigError
from config import schema as s

from .startup import startup_settings

try:
    _settings = startup_settings()
except ConfigError as error:
    # gunicorn would print a traceback; the message alone says what to fix.
    print(error, file=sys.stderr)
    raise SystemExit(1) from None

_host = _settings[s.HTTP_HOST]
bind = [
    f"[{_host}]:{_settings[s.HTTP_PORT]}"
    if ":" in _host
    else f"{_host}:{_settings[s.HTTP_PORT]}"
]
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
