"""Prometheus metrics (prometheus-client).

One process (`fhircare serve`): the metrics live in the process and `/metrics` renders them,
with prometheus-client's process and Python collectors.

Several worker processes (`fhircare serve --workers N`): prometheus-client's multiprocess
mode. The group's parent makes a fresh folder for it at the start
(`worker_group.metrics_folder`); each worker, once forked, calls `use_multiprocess` before
it builds its app, and then writes its values into files of its own there; whichever worker
answers `/metrics` merges every worker's files (`MultiProcessCollector`). Counters and
histograms are summed over the workers (those that exited included: what they answered was
answered). A gauge says how its workers' values merge (`multiprocess_mode`, ignored in one
process): the sync gauges are computed from the shared store by the worker answering the
scrape just before it renders, so the most recent value of a live worker is the answer
("livemostrecent": not a sum of N copies, nor another worker's older figure); the last
successful sync is a time only the leader sets, and the latest one stays true ("max"). The
per-process collectors (process_*, python_*) are not exported in this mode.

Labels carry route templates, status codes, ACK codes and outcomes, never ids or values.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no `_created` series: counters since process start suffice

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's setting: where values go

_multiprocess_dir: Path | None = None  # set in a worker of `serve --workers N`


def _define() -> None:
    """(Re)define the metrics, with whichever value class prometheus-client now uses."""
    global HTTP_REQUESTS, HTTP_LATENCY, HL7_MESSAGES, DISCHARGES
    global SYNC_OUTBOX, SYNC_HELD, SYNC_LAG, SYNC_LAST_SUCCESS, SYNC_FAILURES
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
    # computed from the store when scraped, by the worker that answers the scrape
    SYNC_OUTBOX = Gauge(
        "fhircare_sync_outbox_depth",
        "Local changes waiting to be pushed to the HAPI server",
        multiprocess_mode="livemostrecent",
    )
    SYNC_HELD = Gauge(
        "fhircare_sync_held",
        "Changes held back from push by a flagged conflict",
        multiprocess_mode="livemostrecent",
    )
    SYNC_LAG = Gauge(
        "fhircare_sync_lag_seconds",
        "Age of the oldest change waiting to be pushed (0 when none)",
        multiprocess_mode="livemostrecent",
    )
    SYNC_LAST_SUCCESS = Gauge(  # set by the sync loop, which only the leader runs
        "fhircare_sync_last_success_timestamp_seconds",
        "When the last sync cycle succeeded",
        multiprocess_mode="max",
    )
    SYNC_FAILURES = Counter("fhircare_sync_failures", "Sync cycles that failed (retried later)")


HTTP_REQUESTS: Counter
HTTP_LATENCY: Histogram
HL7_MESSAGES: Counter
DISCHARGES: Counter
SYNC_OUTBOX: Gauge
SYNC_HELD: Gauge
SYNC_LAG: Gauge
SYNC_LAST_SUCCESS: Gauge
SYNC_FAILURES: Counter
_define()


def _defined() -> list[Counter | Gauge | Histogram]:
    return [
        HTTP_REQUESTS,
        HTTP_LATENCY,
        HL7_MESSAGES,
        DISCHARGES,
        SYNC_OUTBOX,
        SYNC_HELD,
        SYNC_LAG,
        SYNC_LAST_SUCCESS,
        SYNC_FAILURES,
    ]


def sync_idle() -> None:
    """The sync gauges when there is no sync (no HAPI server): nothing waits. Set at each
    scrape, so that with several workers too the scrape has their samples (prometheus-
    client's multiprocess mode leaves out a "livemostrecent" gauge no worker has set)."""
    for gauge in (SYNC_OUTBOX, SYNC_HELD, SYNC_LAG):
        gauge.set(0.0)


def use_multiprocess(directory: Path) -> None:
    """In one worker of a group, before its app is built: write the metrics' values into
    `directory` (shared by the group's workers) from now on, and render every worker's.
    The metrics are defined anew (those the parent defined before the fork keep values in
    memory only)."""
    global _multiprocess_dir
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    for metric in _defined():
        REGISTRY.unregister(metric)
    _define()
    _multiprocess_dir = directory


def multiprocess_dir() -> Path | None:
    """The group's metrics folder in a worker of `serve --workers N`; None in one process."""
    return _multiprocess_dir


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (every worker's, merged, in a group)."""
    if _multiprocess_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_multiprocess_dir))
    return generate_latest(registry), CONTENT_TYPE_LATEST
