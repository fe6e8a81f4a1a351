"""The audit trail of a large Bulk Data export: committing one AuditEvent per patient of a
10,000-patient export, as one commit and as the recorder does it (commits of `batch`
events), while a writer and a reader keep using the same embedded store (fsync on).

    python benchmarks/bench_audit_flush.py [--patients 10000] [--batch 500]

Prints `name=value` lines: seconds to build the events and to commit them each way, the
longest a single write and a single read took meanwhile (and idle), and the ratio of the
longest writes (one commit / batched: above 1, batching holds writers up less). Building
the events takes no store lock; what writers feel then is only the GIL.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fhircare.security.audit import export_event
from fhircare.security.context import AuthContext
from fhircare.security.scopes import ScopeSet
from fhircare.services.audit import AuditRecorder
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

JOB = "http://127.0.0.1:8000/fhir/bulk/0123456789abcdef0123456789abcdef"
CTX = AuthContext(subject="svc", client_id="svc", scopes=ScopeSet.parse("system/*.rs"))


def patients(n: int) -> list[str]:
    return [f"Patient/bb{i}" for i in range(n)]


class Load:
    """A writer (one small commit at a time) and a reader, timing each call."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.writes: list[float] = []
        self.reads: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def _write(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            body = {"resourceType": "Basic", "code": {"text": "load"}}
            self.store.commit([WriteOp("create", "Basic", resource=body)])
            self.writes.append(time.perf_counter() - t)

    def _read(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            self.store.read("Patient", "bb0")
            self.reads.append(time.perf_counter() - t)
            time.sleep(0.001)

    def measure(self, work: Callable[[], None]) -> tuple[float, float, float, int]:
        """(seconds `work` took, longest write and read in ms while it ran, writes done)."""
        w, r = len(self.writes), len(self.reads)
        t = time.perf_counter()
        work()
        elapsed = time.perf_counter() - t
        time.sleep(0.05)  # let the calls blocked by `work` finish and be counted
        writes = self.writes[w:]
        return elapsed, max(writes) * 1000, max(self.reads[r:]) * 1000, len(writes)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp), fsync=True)
        store.commit([WriteOp("update", "Patient", id="bb0", resource={"resourceType": "Patient"})])
        with Load(store) as load:
            time.sleep(0.5)
            idle_writes, idle_reads = list(load.writes), list(load.reads)
            events: list[dict] = []
            build = load.measure(
                lambda: events.extend(
                    export_event(CTX, "complete", job_url=JOB, patient_ref=p, now=now)
                    for p in patients(args.patients)
                )
            )
            one = load.measure(
                lambda: store.commit(
                    [WriteOp("create", "AuditEvent", resource=e, handed_over=True) for e in events]
                )
            )
            # the recorder as the export uses it; queued first, then flushed `batch` a time
            recorder = AuditRecorder(store, interval=3600, batch=args.patients + 1)
            recorder.record_export(CTX, "complete", job_url=JOB, patients=patients(args.patients))
            recorder.batch = args.batch
            batched = load.measure(recorder.flush)
            recorder.close()
        store.close()
    print(f"audit_events={args.patients}")
    print(f"audit_batch={args.batch}")
    print(f"idle_write_p50_ms={statistics.median(idle_writes) * 1000:.1f}")
    print(f"idle_write_max_ms={max(idle_writes) * 1000:.1f}")
    print(f"idle_read_max_ms={max(idle_reads) * 1000:.1f}")
    print(f"build_events_s={build[0]:.2f}")
    print(f"build_events_longest_write_ms={build[1]:.0f}")
    print(f"one_commit_s={one[0]:.2f}")
    print(f"one_commit_longest_write_ms={one[1]:.0f}")
    print(f"one_commit_longest_read_ms={one[2]:.0f}")
    print(f"one_commit_writes_meanwhile={one[3]}")
    print(f"batched_s={batched[0]:.2f}")
    print(f"batched_longest_write_ms={batched[1]:.0f}")
    print(f"batched_longest_read_ms={batched[2]:.0f}")
    print(f"batched_writes_meanwhile={batched[3]}")
    print(f"longest_write_one_commit_over_batched={one[1] / batched[1]:.1f}")


if __name__ == "__main__":
    main()
