"""Prometheus metrics (prometheus-client), process-wide: one process serves one store.

Labels carry route templates, status codes, ACK codes and outcomes, never ids or values.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no `_created` series: counters since process start suffice

HTTP_REQUESTS = Counter(
    "fhircare_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "fhircare_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HL7_MESSAGES = Counter(
    "fhircare_hl7_messages",
    "HL7 v2 messages answered, by transport, message type and ACK code",
    ["transport", "type", "ack"],
)
DISCHARGES = Counter(
    "fhircare_discharges",
    "Discharges handled, by outcome (processed, no-follow-up, skipped, failed)",
    ["outcome"],
)
SYNC_OUTBOX = Gauge(
    "fhircare_sync_outbox_depth", "Local changes waiting to be pushed to the HAPI server"
)
SYNC_HELD = Gauge("fhircare_sync_held", "Changes held back from push by a flagged conflict")
SYNC_LAG = Gauge(
    "fhircare_sync_lag_seconds", "Age of the oldest change waiting to be pushed (0 when none)"
)
SYNC_LAST_SUCCESS = Gauge(
    "fhircare_sync_last_success_timestamp_seconds", "When the last sync cycle succeeded"
)
SYNC_FAILURES = Counter("fhircare_sync_failures", "Sync cycles that failed (retried later)")


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
