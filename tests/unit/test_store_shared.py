"""The embedded store shared by several processes (`serve --workers N`): two stores opened
`shared` on one folder (as two workers do) see each other's commits, SearchParameters and
compactions, and a reopen loses nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from fhircare.fhir.errors import BadRequest
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.journal import GroupLock

EYE = {
    "resourceType": "SearchParameter",
    "id": "eye",
    "url": "http://example.org/SearchParameter/eye",
    "name": "eye",
    "description": "Eye colour",
    "status": "active",
    "code": "eye-colour",
    "base": ["Patient"],
    "type": "token",
    "expression": "Patient.extension('http://example.org/eye').value",
}


def _patient(pid: str, family: str, eye: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
    if eye:
        body["extension"] = [{"url": "http://example.org/eye", "valueCode": eye}]
    return body


def _put(store: EmbeddedStore, resource: dict[str, Any]) -> None:
    rtype, rid = resource["resourceType"], resource["id"]
    store.commit([WriteOp("update", rtype, id=rid, resource=resource)])


def _ids(store: EmbeddedStore, params: list[tuple[str, str]]) -> list[str]:
    return sorted(r["id"] for r in store.search("Patient", params))


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    a = EmbeddedStore(tmp_path / "data", fsync=False, shared=True)
    b = EmbeddedStore(tmp_path / "data", fsync=False, shared=True)
    yield a, b
    a.close()
    b.close()


def test_each_reads_and_searches_what_the_other_wrote(pair: Any, tmp_path: Path) -> None:
    a, b = pair
    _put(a, _patient("p1", "Ames"))
    assert b.read("Patient", "p1")["name"][0]["family"] == "Ames"
    assert _ids(b, [("family", "Ames")]) == ["p1"]
    _put(b, _patient("p1", "Baker"))  # an update on top of the other's version
    _put(b, _patient("p2", "Baker"))
    assert a.read("Patient", "p1")["meta"]["versionId"] == "2"
    assert _ids(a, [("family", "Baker")]) == ["p1", "p2"]
    assert _ids(a, [("family", "Ames")]) == []  # the index followed the update
    assert a.last_seq == b.last_seq == 3
    a.close()
    b.close()
    reopened = EmbeddedStore(tmp_path / "data", fsync=False)
    assert _ids(reopened, [("family", "Baker")]) == ["p1", "p2"]
    reopened.close()


def test_a_search_parameter_written_by_one_is_honoured_by_the_other(pair: Any) -> None:
    a, b = pair
    _put(a, _patient("eve", "Eve", eye="blue"))
    with pytest.raises(BadRequest):
        b.search("Patient", [("eye-colour", "blue")])
    _put(a, EYE)
    assert _ids(b, [("eye-colour", "blue")]) == ["eve"]
    _put(b, _patient("ann", "Ann", eye="blue"))
    assert _ids(a, [("eye-colour", "blue")]) == ["ann", "eve"]


def test_a_compaction_by_one_is_followed_by_the_other(pair: Any, tmp_path: Path) -> None:
    a, b = pair
    _put(a, _patient("p1", "Before"))  # b has not read it yet when a compacts
    a.compact()
    assert (tmp_path / "data" / "journal.log").stat().st_size == 0
    _put(a, _patient("p2", "After"))
    assert _ids(b, [("family", "Before")]) == ["p1"]
    assert _ids(b, [("family", "After")]) == ["p2"]
    _put(b, _patient("p3", "After"))  # b appends to the new journal
    b.compact()
    _put(b, _patient("p4", "After"))
    assert _ids(a, [("family", "After")]) == ["p2", "p3", "p4"]
    a.close()
    b.close()
    reopened = EmbeddedStore(tmp_path / "data", fsync=False)
    assert _ids(reopened, [("family", "After")]) == ["p2", "p3", "p4"]
    assert reopened.read("Patient", "p1")["name"][0]["family"] == "Before"
    reopened.close()


def test_conditional_writes_lock_the_whole_group(pair: Any) -> None:
    a, b = pair
    assert isinstance(a.conditional, GroupLock)
    with a.conditional, a.conditional:  # reentrant within a thread
        pass
    with b.conditional:
        pass


def test_one_that_missed_two_compactions_reloads_the_snapshot(pair: Any) -> None:
    a, b = pair
    _put(a, _patient("p1", "First"))
    a.compact()
    _put(a, _patient("p2", "Middle"))  # only in the journal between the two compactions
    _put(a, EYE)
    a.compact()
    _put(a, _patient("p3", "Last", eye="green"))
    assert _ids(b, [("family", "Middle")]) == ["p2"]
    assert _ids(b, [("family", "First")]) == ["p1"]
    assert _ids(b, [("eye-colour", "green")]) == ["p3"]  # the reloaded SearchParameter
    _put(b, _patient("p4", "Middle"))
    assert _ids(a, [("family", "Middle")]) == ["p2", "p4"]


def test_versions_keep_one_order_of_last_updated_across_the_group(pair: Any) -> None:
    from datetime import timedelta

    a, b = pair
    a._last_instant += timedelta(days=2)  # a's clock ahead (its instants never go back)
    _put(a, _patient("p1", "Ahead"))
    _put(b, _patient("p1", "Behind"))
    first, second = (b.vread("Patient", "p1", v)["meta"]["lastUpdated"] for v in ("1", "2"))
    assert second > first


def test_a_read_catches_up_without_the_write_lock_and_only_to_the_durable_offset(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    _put(a, _patient("p1", "Ames"))
    assert b.read("Patient", "p1")["name"][0]["family"] == "Ames"  # b is caught up
    _put(a, _patient("p2", "Baker"))
    # a record written but not yet made durable (no sync: nothing published) stays unseen
    a._journal.write({"seq": 99, "tables": {"_meta": {"x": {"id": "x", "value": {"v": 1}}}}})

    def refused(exclusive: bool) -> int:
        raise AssertionError(f"a read took the write lock (exclusive={exclusive})")

    monkeypatch.setattr(b._journal, "write_lock", refused)
    assert b.read("Patient", "p2")["name"][0]["family"] == "Baker"
    assert b._journal.journal_bytes < a._journal.journal_bytes
    assert b._mem.get("_meta", {}).get("x") is None


def test_a_publish_cut_short_sends_readers_to_the_locked_path(pair: Any, tmp_path: Path) -> None:
    """A writer killed between the writes of a publish leaves `DURABLE`'s sequence odd: a
    reader does not spin on it, it catches up under the lock; the next publish repairs it."""
    import mmap
    import struct

    from fhircare.store.journal import DURABLE

    a, b = pair
    _put(a, _patient("p1", "Before"))
    assert b.read("Patient", "p1")["name"][0]["family"] == "Before"
    _put(a, _patient("p2", "Cut"))
    with (tmp_path / "data" / DURABLE).open("r+b") as fh, mmap.mmap(fh.fileno(), 24) as m:
        seq = struct.unpack_from("<Q", m)[0]
        struct.pack_into("<Q", m, 0, seq | 1)  # as a writer that died mid-publish leaves it
    assert b.read("Patient", "p2")["name"][0]["family"] == "Cut"
    _put(a, _patient("p3", "After"))  # the next publish makes the sequence even again
    assert b._journal.durable.read() is not None
    assert b.read("Patient", "p3")["name"][0]["family"] == "After"


def test_events_one_wrote_are_held_by_the_other_as_the_same_bytes(pair: Any) -> None:
    a, b = pair
    now = "2026-12-04T12:00:00Z"
    events = [
        {"resourceType": "AuditEvent", "recorded": now, "outcome": "0",
         "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
         "agent": [{"requestor": True, "who": {"display": f"Zoë {i}"}}],
         "source": {"observer": {"display": "fhircare"}},
         "entity": [{"what": {"reference": f"Patient/p{i % 2}"}}]}
        for i in range(6)
    ]  # fmt: skip
    results = a.commit([WriteOp("create", "AuditEvent", resource=e) for e in events])
    written = {r.id: r.resource for r in results}
    assert {r["id"]: r for r in b.search("AuditEvent", [])} == written  # b caught up
    mine = a._mem["AuditEvent._history"]
    theirs = b._mem["AuditEvent._history"]
    assert set(theirs) == set(mine)
    for key, doc in mine.items():
        assert isinstance(theirs[key]["resource"], bytes)
        assert theirs[key]["resource"] == doc["resource"]  # the writer's packed bytes
    for rid, event in written.items():
        assert b.read("AuditEvent", rid) == event
    found = b.search("AuditEvent", [("patient", "Patient/p1")])
    assert sorted(r["id"] for r in found) == sorted(
        rid for rid, e in written.items() if e["entity"][0]["what"]["reference"] == "Patient/p1"
    )


def test_compactions_in_the_background_across_the_group_lose_nothing(tmp_path: Path) -> None:
    """Both write, each compacting in the background when its journal is due (one writer of
    snapshots at a time across the group); each sees every write, and so does a reopen,
    from the folder as it is (a crash) and after a clean close."""
    folder = tmp_path / "data"
    a = EmbeddedStore(folder, fsync=False, shared=True, compact_bytes=3_000)
    b = EmbeddedStore(folder, fsync=False, shared=True, compact_bytes=3_000)
    written: list[str] = []
    try:
        for n in range(300):
            store = (a, b)[n % 2]
            _put(store, _patient(f"p{n}", "F" * 100))
            written.append(f"p{n}")
            if n % 37 == 0:  # each reads what both wrote, compactions included
                assert _ids(a, []) == _ids(b, []) == sorted(written)
        a.wait_for_snapshot()
        b.wait_for_snapshot()
        assert a._journal.generation >= 4  # compacted, by both
        assert _ids(a, []) == _ids(b, []) == sorted(written)
        crashed = tmp_path / "crashed"
        shutil.copytree(folder, crashed)
        alone = EmbeddedStore(crashed, fsync=False)
        try:
            assert _ids(alone, []) == sorted(written)
        finally:
            alone.close()
    finally:
        a.close()
        b.close()
    reopened = EmbeddedStore(folder, fsync=False)
    try:
        assert _ids(reopened, []) == sorted(written)
    finally:
        reopened.close()
