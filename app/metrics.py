"""Prometheus metrics of the credential lifecycle, correct across workers.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR
(set by `app.gunicorn_conf` before any worker starts) and a scrape merges
them: counters are summed, the expiry gauge is the minimum over live workers.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EXPIRY = Gauge(
    "hitcounter_redis_credentials_expiry_seconds",
    "Seconds until the current Redis credentials expire (minimum over workers).",
    multiprocess_mode="livemin",
)
RENEWALS = Counter(
    "hitcounter_vault_lease_renewals_total", "Vault lease renewals that succeeded."
)
ROTATIONS = Counter(
    "hitcounter_vault_lease_rotations_total",
    "Times new Redis credentials replaced the current ones.",
)
RENEWAL_FAILURES = Counter(
    "hitcounter_vault_lease_renewal_failures_total",
    "Failed attempts to renew or replace the Redis credentials.",
)
VAULT_REQUESTS = Counter(
    "hitcounter_vault_requests_total",
    "Requests sent to Vault by the credential lifecycle.",
    ["action", "outcome"],
)


class LeaseMetrics:
    """A `config.leases.LeaseObserver` that updates the metrics above."""

    def vault_request(self, action: str, ok: bool) -> None:
        # The action names a path template, never a lease id or a secret.
        kind = action.split(" at ")[0]
        VAULT_REQUESTS.labels(kind, "ok" if ok else "error").inc()

    def renewed(self) -> None:
        RENEWALS.inc()

    def rotated(self) -> None:
        ROTATIONS.inc()

    def renewal_failed(self) -> None:
        RENEWAL_FAILURES.inc()

    def expires_in(self, seconds: float) -> None:
        EXPIRY.set(seconds)


def registry() -> CollectorRegistry:
    """Return the registry to scrape: merged over workers when under gunicorn."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return DEFAULT_REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def render() -> bytes:
    return generate_latest(registry())
