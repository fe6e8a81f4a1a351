"""When the embedded store compacts: not every `compact_bytes` of journal once the snapshot is
larger than that (each snapshot rewrites the whole store), but once the journal has grown as
large as the last snapshot; nothing is lost across the compactions and a reopen."""

from __future__ import annotations

from pathlib import Path

from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore


def _write(store: EmbeddedStore, pid: str) -> None:
    resource = {"resourceType": "Patient", "id": pid, "name": [{"family": "F" * 200}]}
    store.commit([WriteOp("update", "Patient", id=pid, resource=resource)])


def test_compaction_waits_for_a_journal_as_large_as_the_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    store = EmbeddedStore(folder, fsync=False, compact_bytes=4_000)
    snapshot = folder / "snapshot.json"
    sizes: list[int] = []  # the snapshot's size at each compaction
    journal_at_compaction: list[int] = []
    journal = folder / "journal.log"
    for n in range(400):
        before = journal.stat().st_size if journal.exists() else 0
        _write(store, f"p{n}")
        size = snapshot.stat().st_size if snapshot.exists() else 0
        if not sizes or size != sizes[-1]:
            sizes.append(size)
            journal_at_compaction.append(before)
    store.close()
    # compacted, more than once; once the snapshot outgrew compact_bytes each compaction came
    # only after a journal at least as large as the snapshot before it
    assert len(sizes) >= 4
    for previous, journal_bytes in zip(sizes[1:-1], journal_at_compaction[2:], strict=True):
        assert journal_bytes >= max(4_000, previous)
    # fewer snapshots than a fixed threshold would have written (~1 per 4 KB of journal)
    assert len(sizes) < 400 * 300 // 4_000 // 2

    reopened = EmbeddedStore(folder, fsync=False, compact_bytes=4_000)
    try:
        assert {r["id"] for r in reopened.search("Patient", [])} == {f"p{n}" for n in range(400)}
    finally:
        reopened.close()
