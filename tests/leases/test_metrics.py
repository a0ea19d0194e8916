"""Lease metrics on /metrics, merged over gunicorn's two workers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.leases.conftest import GunicornFactory
from tests.leases.stack import Gunicorn, Stack, run_traffic, wait_for

EXPIRY = "hitcounter_redis_credentials_expiry_seconds"
RENEWALS = "hitcounter_vault_lease_renewals_total"
ROTATIONS = "hitcounter_vault_lease_rotations_total"
FAILURES = "hitcounter_vault_lease_renewal_failures_total"
VAULT_REQUESTS = "hitcounter_vault_requests_total"


def scrape(service: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample on /metrics, keyed by name and sorted labels."""
    response = service.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value

    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_summed_across_workers(
    stack: Stack, gunicorn_factory: GunicornFactory
) -> None:
    service = gunicorn_factory(stack)
    traffic = run_traffic(service.url(), seconds=2, threads=2)
    both_rotated = wait_for(
        lambda: len({e.pid for e in service.log().rotated()}) == 2, 6.0
    )
    # Revoked while idle: each worker's next renewal is rejected, and it rotates.
    stack.revoke_all()
    rejected = wait_for(
        lambda: service.log().text.count("reason='renewal rejected'") == 2, 4.0
    )

    before = service.log()
    samples = scrape(service)
    after = service.log()

    assert traffic.failures == []
    assert both_rotated
    assert rejected
    assert 0 < value(samples, EXPIRY) <= stack.default_ttl
    rotations = value(samples, ROTATIONS)
    assert len(before.rotated()) <= rotations <= len(after.rotated())
    assert rotations >= 4
    # A capped renewal counts as a renewal but is logged as "capped".
    renewals = value(samples, RENEWALS)
    renewed_before = len(before.of_kind("renewed")) + len(before.of_kind("capped"))
    renewed_after = len(after.of_kind("renewed")) + len(after.of_kind("capped"))
    assert renewed_before <= renewals <= renewed_after
    assert renewals >= 4
    assert value(samples, FAILURES) >= 2
    reads = value(samples, VAULT_REQUESTS, action="credentials read", outcome="ok")
    assert reads == len(after.issued()) + len(after.rotated())
    assert value(samples, VAULT_REQUESTS, action="lease renew", outcome="error") >= 2
    assert value(samples, VAULT_REQUESTS, action="approle login", outcome="ok") == 2
