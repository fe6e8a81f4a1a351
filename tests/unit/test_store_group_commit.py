"""The embedded store under concurrent writers: group commit, readers that never wait for an
fsync nor see a write before it is durable, a failed fsync, a failed append, and the fast
JSON copies the store and the API use (equivalence with the standard library)."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fhircare.fhir import jsonio
from fhircare.fhir.errors import Conflict
from fhircare.store import journal as journal_module
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore, StoreFailed
from fhircare.store.journal import Journal

ROOT = Path(__file__).resolve().parents[2]


def patient(pid: str, family: str = "Chalmers") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def put(store: EmbeddedStore, pid: str, family: str = "Chalmers") -> str:
    (result,) = store.commit([WriteOp("update", "Patient", id=pid, resource=patient(pid, family))])
    return result.version_id


class GatedSync:
    """Journal.sync that holds its first call until released (and says when it is held)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, journal: Journal) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(60), "the test never released the first fsync"
        self.real(journal)


def test_readers_neither_wait_for_an_fsync_nor_see_the_write_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    put(store, "p1", "Before")
    gate = GatedSync(Journal.sync)
    monkeypatch.setattr(Journal, "sync", lambda journal: gate(journal))
    writer = threading.Thread(target=put, args=(store, "p1", "After"))
    writer.start()
    assert gate.entered.wait(60)
    # The writer is inside its fsync: a read answers now, with the durable version.
    read = store.read("Patient", "p1")
    assert read["name"][0]["family"] == "Before" and read["meta"]["versionId"] == "1"
    assert store.search("Patient", [("name", "After")]) == []
    gate.release.set()
    writer.join(60)
    assert store.read("Patient", "p1")["name"][0]["family"] == "After"
    assert store.search("Patient", [("name", "After")])[0]["id"] == "p1"
    store.close()


def test_concurrent_writers_share_an_fsync_and_every_write_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    put(store, "shared", "v1")
    gate = GatedSync(Journal.sync)
    monkeypatch.setattr(Journal, "sync", lambda journal: gate(journal))
    writers = 12
    all_written = threading.Event()
    real_write = Journal.write

    def counting_write(journal: Journal, record: Any) -> None:
        real_write(journal, record)
        if store._written_number >= writers:  # noqa: SLF001 - the test's only probe
            all_written.set()

    monkeypatch.setattr(Journal, "write", counting_write)
    versions: list[str] = []
    lock = threading.Lock()

    def update(i: int) -> None:
        vid = put(store, "shared", f"w{i}")
        with lock:
            versions.append(vid)

    threads = [threading.Thread(target=update, args=(i,)) for i in range(writers)]
    threads[0].start()
    assert gate.entered.wait(60)  # the first writer holds its fsync open...
    for t in threads[1:]:
        t.start()
    assert all_written.wait(60)  # ...while the others write and queue behind it
    gate.release.set()
    for t in threads:
        t.join(60)
    # Each update got its own version, on top of the one before (none lost, none doubled)...
    assert sorted(versions, key=int) == [str(v) for v in range(2, writers + 2)]
    history = store.history("Patient", "shared")
    assert len(history) == writers + 1
    # ...and the eleven commits queued behind the first were made durable by one fsync.
    assert gate.calls == 2
    store.close()
    reopened = EmbeddedStore(tmp_path)
    assert reopened.current_version("Patient", "shared") == str(writers + 1)
    reopened.close()


def test_a_failed_fsync_stops_writes_and_reopening_replays_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    put(store, "ok")

    def failing_sync(journal: Journal) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Journal, "sync", failing_sync)
    with pytest.raises(OSError):
        put(store, "in-doubt")
    monkeypatch.undo()
    with pytest.raises(StoreFailed):  # nothing is built on a write whose fate is unknown
        put(store, "after")
    assert store.read("Patient", "ok")["id"] == "ok"  # reads go on
    assert not store.exists("Patient", "in-doubt")  # never shown before durable
    store._journal.close()  # noqa: SLF001 - a crash: no snapshot at close
    reopened = EmbeddedStore(tmp_path)
    assert reopened.exists("Patient", "ok")
    assert reopened.exists("Patient", "in-doubt")  # it reached the file: replayed
    put(reopened, "after")
    reopened.close()


def test_a_failed_append_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    put(store, "first")
    size = (tmp_path / "journal.log").stat().st_size
    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes) -> int:
        if len(data) > 1:
            real_write(fd, data[: len(data) // 2])
            monkeypatch.setattr(journal_module.os, "write", fail)
            return len(data) // 2
        return real_write(fd, data)

    def fail(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full_disk)
    with pytest.raises(OSError):
        put(store, "second")
    monkeypatch.undo()
    assert (tmp_path / "journal.log").stat().st_size == size  # the half record is cut off
    put(store, "third")  # the store goes on
    store._journal.close()  # noqa: SLF001 - a crash
    reopened = EmbeddedStore(tmp_path)  # no damaged record before a good one
    assert reopened.exists("Patient", "first") and reopened.exists("Patient", "third")
    assert not reopened.exists("Patient", "second")
    reopened.close()


def test_meta_set_after_a_snapshot_survives_a_crash(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    put(store, "p1")
    store.close()  # snapshot; the journal is emptied
    store = EmbeddedStore(tmp_path)
    store.set_meta("sync.push.seq", 1)  # a record with the seq of the last change
    store._journal.close()  # noqa: SLF001 - a crash
    reopened = EmbeddedStore(tmp_path)
    assert reopened.get_meta("sync.push.seq") == 1
    reopened.close()


def test_handed_over_resources_are_kept_without_a_copy_and_others_are_copied(
    tmp_path: Path,
) -> None:
    store = EmbeddedStore(tmp_path)
    mine = patient("copied")
    (result,) = store.commit([WriteOp("update", "Patient", id="copied", resource=mine)])
    mine["name"][0]["family"] = "Changed later"
    assert result.resource is not None
    result.resource["name"][0]["family"] = "Changed in the result"
    assert store.read("Patient", "copied")["name"][0]["family"] == "Chalmers"
    read = store.read("Patient", "copied")
    read["name"][0]["family"] = "Changed after a read"
    assert store.read("Patient", "copied")["name"][0]["family"] == "Chalmers"
    given = patient("given")
    store.commit([WriteOp("update", "Patient", id="given", resource=given, handed_over=True)])
    assert store.read("Patient", "given")["meta"]["versionId"] == "1"
    store.close()


# ---- jsonio: the same JSON as the standard library --------------------------------------


def _documents() -> list[Any]:
    docs: list[Any] = [
        json.loads(p.read_text()) for p in sorted((ROOT / "profiles").rglob("*.json"))[:300]
    ]
    docs += [
        {"valueQuantity": {"value": 10**30}},  # a decimal beyond 64 bits
        {"valueDecimal": 0.1, "n": -(2**63), "u": 2**64 - 1, "e": 1.5e-7, "big": 1e300},
        {"text": "Zoë ✓ 日本 \u2028 \"quoted\" \\ \t", "empty": [], "none": None, "t": True},
        [[[[{"deep": [1, 2.5, "x"]}]]]],
    ]
    return docs


def test_jsonio_copy_is_a_deep_copy_equal_to_copy_deepcopy() -> None:
    for doc in _documents():
        copied = jsonio.copy(doc)
        assert copied == copy.deepcopy(doc)
        assert json.dumps(copied) == json.dumps(doc)  # same types, same key order
        if isinstance(doc, dict) and doc:
            assert copied is not doc
            key = next(iter(doc))
            if isinstance(doc[key], dict | list):
                assert copied[key] is not doc[key]


def test_jsonio_dumps_writes_what_the_standard_library_writes() -> None:
    for doc in _documents():
        ours = jsonio.dumps(doc)
        assert json.loads(ours) == doc
        if "e" not in doc and "big" not in doc:  # orjson writes 1e-07 as 1.5e-7: same value
            assert ours == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        assert json.loads(jsonio.dumps_pretty(doc)) == doc


def test_commits_queued_behind_a_writer_are_written_by_it_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    """Commits that queue while one thread writes are then written by one thread, in the
    order they came, each with its own result or error (a conflict fails only its caller)."""
    store = EmbeddedStore(tmp_path)
    put(store, "taken")
    outcomes: dict[str, Any] = {}

    def create(pid: str) -> None:
        op = WriteOp("create", "Patient", id=pid, resource=patient(pid, pid), keep_id=True)
        try:
            (result,) = store.commit([op])
            outcomes[pid] = result.version_id
        except Conflict as exc:
            outcomes[pid] = exc

    names = ["p1", "taken", "p2", "p3"]
    store._commit_lock.acquire()  # the first writer waits here with the others queued behind
    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    try:
        threads[0].start()
        with store._combine:
            while not store._combining:
                store._combine.wait(0.01)
        for t in threads[1:]:
            t.start()
        with store._combine:
            while len(store._pending) < 3:
                store._combine.wait(0.01)
    finally:
        store._commit_lock.release()
    for t in threads:
        t.join()
    assert outcomes["p1"] == outcomes["p2"] == outcomes["p3"] == "1"
    assert isinstance(outcomes["taken"], Conflict)
    families = [store.read("Patient", n)["name"][0]["family"] for n in names]
    assert families == ["p1", "Chalmers", "p2", "p3"]
    store.close()
    reopened = EmbeddedStore(tmp_path)
    assert {p: reopened.read("Patient", p)["meta"]["versionId"] for p in names} == {
        "p1": "1",
        "taken": "1",
        "p2": "1",
        "p3": "1",
    }
    reopened.close()
