"""What the server's AuditEvents cost the embedded store: memory, Python's full collection,
reopening, reads and searches, with N events held (the server writes about two per request).

    python benchmarks/bench_audit_memory.py [--events 200000]

The events are built as the audit recorder builds them (a read or a search of one patient's
data, 2,000 patients) and committed as it commits them (500 per commit, handed over), with
fsync off. Prints `name=value` lines: resident memory per event, objects the collector
tracks per event, the median time of a full `gc.collect()` (and of one with an empty
store, the baseline), the median time of a read and of `AuditEvent?patient=` (about N/2,000
matches) against a Patient read; then, in a fresh process, the time to reopen the store
from its snapshot and the resident memory per event after it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_search_scale import median_ms, rss_bytes

from fhircare.security.audit import audit_event
from fhircare.security.context import AuthContext
from fhircare.security.scopes import ScopeSet
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

CTX = AuthContext(
    subject="clinician-1",
    client_id="care-app",
    scopes=ScopeSet.parse("user/*.rs"),
    fhir_user="Practitioner/p1",
)
PATIENTS = 2000
BATCH = 500


def event(i: int) -> dict[str, Any]:
    patient = f"Patient/pat-{i % PATIENTS}"
    now = datetime.now(UTC)
    if i % 2:
        return audit_event(CTX, "R", "Observation", f"obs-{i}", "0", patient_ref=patient, now=now)
    query = f"patient={patient}&code=http://loinc.org|8867-4"
    return audit_event(
        CTX, "R", "Observation", None, "0", patient_ref=patient, query=query, now=now
    )


def full_gc_ms(rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def reopen(folder: Path, n: int) -> None:
    """(In a fresh process) open the store from its snapshot: seconds, memory per event."""
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    store = EmbeddedStore(folder, fsync=False)
    seconds = time.perf_counter() - t
    gc.collect()
    per_event = (rss_bytes() - before) / n
    assert store.count("AuditEvent") == n
    print(f"reopen_s={seconds:.2f}")
    print(f"reopened_memory_per_event_bytes={per_event:.0f}")
    print(f"reopened_full_gc_ms={full_gc_ms():.1f}")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reopen", type=Path, help=argparse.SUPPRESS)  # the fresh process's part
    args = ap.parse_args()
    n = args.events
    if args.reopen:
        reopen(args.reopen, n)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        store = EmbeddedStore(folder, fsync=False)
        store.commit([WriteOp("update", "Patient", id="pat-0", resource={"active": True})])
        gc.collect()
        empty_gc = full_gc_ms()
        tracked_before = len(gc.get_objects())
        before = rss_bytes()
        ids: list[str] = []
        for start in range(0, n, BATCH):
            ops = [
                WriteOp("create", "AuditEvent", resource=event(i), handed_over=True)
                for i in range(start, min(n, start + BATCH))
            ]
            ids += [r.id for r in store.commit(ops)]
        gc.collect()
        per_event = (rss_bytes() - before) / n
        tracked = (len(gc.get_objects()) - tracked_before) / n
        held_gc = full_gc_ms()
        read_ms = median_ms(lambda i: store.read("AuditEvent", i), ids[:: max(1, n // 200)])
        patient_ms = median_ms(lambda _: store.read("Patient", "pat-0"), range(200))
        store.search("AuditEvent", [("patient", "Patient/pat-1")])  # builds the deferred index
        search_ms = median_ms(
            lambda p: store.search("AuditEvent", [("patient", f"Patient/pat-{p}")]), range(1, 21)
        )
        store.close()
        fresh = [sys.executable, __file__, "--events", str(n), "--reopen", str(folder)]
        reopened = subprocess.run(fresh, capture_output=True, text=True, check=True).stdout
    print(f"events={n}")
    print(f"memory_per_event_bytes={per_event:.0f}")
    print(f"gc_tracked_objects_per_event={tracked:.1f}")
    print(f"full_gc_ms={held_gc:.1f}")
    print(f"full_gc_empty_store_ms={empty_gc:.1f}")
    print(f"read_auditevent_median_ms={read_ms:.4f}")
    print(f"read_patient_median_ms={patient_ms:.4f}")
    print(f"search_auditevent_patient_median_ms={search_ms:.3f}")
    print(f"search_hits={n // PATIENTS}")
    print(reopened, end="")


if __name__ == "__main__":
    main()
