"""AuditEvents for reads and writes of patient data, committed in batches.

Recording must not add an fsync to every read, so events are queued and committed
together by a background thread (every `interval` seconds, or at `batch` events, and at
close). A kill -9 can lose at most the last interval's audit records, never clinical data.
A flush commits at most `batch` events per commit: indexing an AuditEvent is done under
the store's write lock, so the 10,000 events of a large export in one commit would hold
other writers up for over a second; in commits of 500 each wait is under a tenth of that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fhircare.fhir.references import subject_reference
from fhircare.security.audit import ExportStage, audit_event, export_event, search_events
from fhircare.security.context import AuthContext
from fhircare.store.base import Store, WriteOp

log = logging.getLogger("fhircare.audit")


class AuditRecorder:
    def __init__(self, store: Store, *, interval: float = 1.0, batch: int = 500) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        self._queue: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fhircare-audit", daemon=True)
        self._thread.start()

    def record(self, ctx: AuthContext, action: str, resource: dict[str, Any], outcome: str) -> None:
        """Queue an AuditEvent when the resource is patient data."""
        patient = subject_reference(resource)
        if patient is None or resource.get("resourceType") == "AuditEvent":
            return
        event = audit_event(
            ctx,
            action,
            resource.get("resourceType"),
            resource.get("id"),
            outcome,
            patient_ref=patient,
            now=datetime.now(UTC),
        )
        self._enqueue([event])

    def record_search(
        self, ctx: AuthContext, resource_type: str, query: str, resources: list[dict[str, Any]]
    ) -> None:
        """Queue one search AuditEvent per patient whose data a search returned."""
        if resource_type == "AuditEvent":
            return
        patients = sorted({p for r in resources if (p := subject_reference(r)) is not None})
        if patients:
            now = datetime.now(UTC)
            self._enqueue(search_events(ctx, resource_type, query, patients, now=now))

    def record_export(
        self,
        ctx: AuthContext,
        stage: ExportStage,
        *,
        job_url: str,
        patients: Iterable[str] = (),
        **details: Any,
    ) -> None:
        """Queue the AuditEvents of one step of a Bulk Data export: at ``complete`` one per
        patient (`patients`, 'Patient/x') whose data it holds, or one when it holds none;
        one otherwise. `details` are `export_event`'s (request_url, file_url, outcome...)."""
        now = datetime.now(UTC)
        refs: list[str | None] = sorted(set(patients)) if stage == "complete" else []
        events = [
            export_event(ctx, stage, job_url=job_url, now=now, patient_ref=ref, **details)
            for ref in refs or [None]
        ]
        self._enqueue(events)

    def _enqueue(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._queue.extend(events)
            if len(self._queue) >= self.batch:
                self._wake.set()

    def flush(self) -> int:
        """Commit the queued events, `batch` at a time; the number committed."""
        with self._lock:
            events, self._queue = self._queue, []
        done = 0
        for start in range(0, len(events), self.batch):
            chunk = events[start : start + self.batch]
            try:
                self.store.commit(
                    [WriteOp("create", "AuditEvent", resource=e, handed_over=True) for e in chunk]
                )
            except Exception:  # audit must never break serving; report without patient data
                log.exception("could not commit %d audit events", len(events) - start)
                with self._lock:
                    self._queue = events[start:] + self._queue
                return done
            done += len(chunk)
        return done

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(5)
        self.flush()
