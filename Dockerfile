# Image for the hit counter. BASE must be a Debian-like image with python3 (3.11 or
# later) and the venv module: the official python image by default, or a local
# stand-in when no registry is reachable.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
# .dockerignore keeps secrets/, .env, .venv and .git out of this context.
COPY . /src
RUN /opt/venv/bin/pip install /src

FROM ${BASE}
# A fixed uid lets operators grant file access (for example to a bind-mounted
# secret) and lets Kubernetes check runAsNonRoot without a passwd lookup.
ARG APP_UID=10001
RUN groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
# Mount points of the named volumes in docker-compose.vault.yml. Docker gives an
# empty named volume the owner and mode of the image's directory, so the app
# user can write the AppRole files there.
RUN install -d -o app -g app -m 0700 /run/vault /run/vault-admin
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HTTP_HOST=0.0.0.0
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# Liveness only: /healthz does not touch Redis, so a Redis outage does not get
# the web container restarted. NOTE: the probe reads HTTP_PORT from the
# environment, so a port set through a secret file or .env is not seen here.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8000'), timeout=4)"]
CMD ["gunicorn", "-c", "python:app.gunicorn_conf", "app:create_app()"]
