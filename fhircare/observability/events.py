"""One log line and one metric per event an operator follows: each HL7 v2 message answered
and each discharge handled. Lines carry control ids, types, codes and resource ids, never
names, identifiers or clinical values."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fhircare.observability import metrics

hl7_log = logging.getLogger("fhircare.hl7")
discharge_log = logging.getLogger("fhircare.discharge")

F = TypeVar("F", bound=Callable[..., list[dict[str, Any]]])


def hl7_message(transport: str, message_type: str, control_id: str, ack: str) -> None:
    """An HL7 v2 message was answered with `ack` (AA, AE or AR)."""
    metrics.HL7_MESSAGES.labels(transport, message_type or "-", ack).inc()
    level = logging.INFO if ack == "AA" else logging.WARNING
    hl7_log.log(
        level,
        "hl7 %s control_id=%s type=%s ack=%s",
        transport,
        control_id or "-",
        message_type or "-",
        ack,
        extra={"transport": transport, "control_id": control_id, "type": message_type, "ack": ack},
    )


def reported_discharge(fn: F) -> F:
    """Wrap `process_discharge(store, encounter, ...)`: a line and a count per call,
    `processed` (follow-up work written), `no-follow-up` (only the AuditEvent that says why:
    the patient died, or the discharge is outside the follow-up window), `skipped` (nothing
    to write: already processed) or `failed` (the exception goes on)."""

    @functools.wraps(fn)
    def wrapper(store: Any, encounter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        ref = f"Encounter/{encounter.get('id', '-')}"
        started = time.perf_counter()
        try:
            written = fn(store, encounter, *args, **kwargs)
        except Exception as exc:
            metrics.DISCHARGES.labels("failed").inc()
            discharge_log.warning(
                "discharge %s failed (%s)",
                ref,
                type(exc).__name__,
                extra={"encounter": ref, "outcome": "failed"},
            )
            raise
        outcome = _outcome(written)
        metrics.DISCHARGES.labels(outcome).inc()
        ms = (time.perf_counter() - started) * 1000
        discharge_log.info(
            "discharge %s %s: %d resources written in %.1f ms",
            ref,
            outcome,
            len(written),
            ms,
            extra={"encounter": ref, "outcome": outcome, "written": len(written), "ms": ms},
        )
        return written

    return wrapper  # type: ignore[return-value]


def _outcome(written: list[dict[str, Any]]) -> str:
    if not written:
        return "skipped"
    if all(r.get("resourceType") == "AuditEvent" for r in written):
        return "no-follow-up"
    return "processed"
