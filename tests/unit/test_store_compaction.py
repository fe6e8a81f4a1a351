"""When the embedded store compacts: not every `compact_bytes` of journal once the snapshot is
larger than that (each snapshot rewrites the whole store), but once the journal has grown as
large as the last snapshot; nothing is lost across the compactions and a reopen."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.journal import Journal


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
        store.wait_for_snapshot()
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


def test_commits_go_on_while_the_snapshot_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction sets the journal aside and writes the snapshot in a thread: commits
    are acknowledged meanwhile; a crash at that moment (the folder copied as it is) loses
    none of them, and neither does the finished compaction."""
    folder = tmp_path / "data"
    store = EmbeddedStore(folder, fsync=False, compact_bytes=4_000)
    started, release = threading.Event(), threading.Event()
    finish = Journal.finish_snapshot

    def held(journal: Journal, tables: dict[str, Any]) -> None:
        started.set()
        assert release.wait(60)
        finish(journal, tables)

    monkeypatch.setattr(Journal, "finish_snapshot", held)
    n = 0
    while not started.is_set():  # up to the first compaction
        _write(store, f"p{n}")
        n += 1
    assert (folder / "journal.prev").exists()
    for _ in range(100):  # acknowledged while the snapshot is held up
        _write(store, f"p{n}")
        n += 1
    crashed = tmp_path / "crashed"
    shutil.copytree(folder, crashed, ignore=shutil.ignore_patterns("LOCK"))
    release.set()
    store.wait_for_snapshot()
    assert not (folder / "journal.prev").exists()
    store.close()
    expected = {f"p{i}" for i in range(n)}
    for copy in (crashed, folder):
        reopened = EmbeddedStore(copy, fsync=False, compact_bytes=4_000)
        try:
            assert {r["id"] for r in reopened.search("Patient", [])} == expected
        finally:
            reopened.close()
    assert not (crashed / "journal.prev").exists()  # the reopened store compacted it away


def test_a_failed_snapshot_keeps_the_journal_and_the_next_compaction_covers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    store = EmbeddedStore(folder, fsync=False, compact_bytes=4_000)
    finish = Journal.finish_snapshot
    failures: list[int] = []

    def failing_once(journal: Journal, tables: dict[str, Any]) -> None:
        if not failures:
            failures.append(1)
            raise OSError(28, "No space left on device")
        finish(journal, tables)

    monkeypatch.setattr(Journal, "finish_snapshot", failing_once)
    n = 0
    while not failures:
        _write(store, f"p{n}")
        n += 1
    store.wait_for_snapshot()
    assert (folder / "journal.prev").exists()  # kept: the snapshot did not replace it
    assert not (folder / "snapshot.json.tmp").exists()
    while (folder / "journal.prev").exists():  # the next compaction writes it again
        _write(store, f"p{n}")
        n += 1
        store.wait_for_snapshot()
    monkeypatch.setattr(Journal, "finish_snapshot", finish)
    store.close()
    reopened = EmbeddedStore(folder, fsync=False, compact_bytes=4_000)
    try:
        assert {r["id"] for r in reopened.search("Patient", [])} == {f"p{i}" for i in range(n)}
    finally:
        reopened.close()
