"""AuditEvents held packed (JSON bytes) in the embedded store: every way of getting them back
(read, vread, search, history, the change log, a restart that replays the journal, one that
loads the snapshot) gives the events as written, fresh each time; the journal and the
snapshot hold them as plain JSON (the journal after each record's own JSON, read back as the
bytes they are)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhircare.fhir import jsonio
from fhircare.security.audit import audit_event
from fhircare.security.context import AuthContext
from fhircare.security.scopes import ScopeSet
from fhircare.store.base import WriteOp, new_id
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.journal import RAW, RAW_SEPARATOR

CTX = AuthContext(
    subject="u1", client_id="app", scopes=ScopeSet.parse("user/*.rs"), fhir_user="Practitioner/1"
)
HISTORY = "AuditEvent._history"


def _events(n: int) -> list[dict[str, Any]]:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        query = f"patient=Patient/p{i % 3}&name=Zoë" if i % 2 else None
        out.append(
            audit_event(CTX, "R", "Observation", None if query else f"o{i}", "0",
                        patient_ref=f"Patient/p{i % 3}", query=query, now=now)
        )  # fmt: skip
    return out


def _write(store: EmbeddedStore, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Commit the events as the audit recorder does; what each became, by id."""
    results = store.commit(
        [WriteOp("create", "AuditEvent", resource=e, handed_over=True) for e in events]
    )
    return {r.id: jsonio.copy(r.resource) for r in results}


def _patient(event: dict[str, Any]) -> str:
    return next(x["what"]["reference"] for x in event["entity"] if x["type"]["code"] == "1")


def _all_ways(store: EmbeddedStore, written: dict[str, dict[str, Any]]) -> None:
    """Every read path gives back exactly what was written."""
    for rid, expected in written.items():
        assert store.read("AuditEvent", rid) == expected
        assert store.vread("AuditEvent", rid, "1") == expected
        (entry,) = store.history("AuditEvent", rid)
        assert entry["resource"] == expected
    by_id = {r["id"]: r for r in store.search("AuditEvent", [])}
    assert by_id == written
    for p in range(3):
        found = store.search("AuditEvent", [("patient", f"Patient/p{p}")])
        assert {r["id"] for r in found} == {
            rid for rid, e in written.items() if _patient(e) == f"Patient/p{p}"
        }
        assert found
        for r in found:
            assert r == written[r["id"]]
    assert {e["resource"]["id"]: e["resource"] for e in store.history("AuditEvent")} == written
    changes = {c.id: c.resource for c in store.changes(0) if c.resource_type == "AuditEvent"}
    assert changes == written
    assert {r["id"]: r for r in store.iter_resources("AuditEvent")} == written


def test_events_are_held_packed_and_read_back_unchanged(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "d", fsync=False)
    try:
        written = _write(store, _events(12))
        assert all(isinstance(d["resource"], bytes) for d in store._mem[HISTORY].values())
        _all_ways(store, written)
    finally:
        store.close()


def test_reads_are_fresh_copies(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "d", fsync=False)
    try:
        written = _write(store, _events(2))
        rid = next(iter(written))
        for got in (
            store.read("AuditEvent", rid),
            store.search("AuditEvent", [("_id", rid)])[0],
            store.history("AuditEvent", rid)[0]["resource"],
        ):
            got["entity"][0]["what"]["reference"] = "Patient/changed"
            got["outcome"] = "8"
        assert store.read("AuditEvent", rid) == written[rid]
    finally:
        store.close()


def test_restart_replaying_the_journal(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    written = _write(store, _events(10))
    written |= _write(store, _events(5))
    line = (folder / "journal.log").read_bytes().splitlines()[0]
    # the journal holds each event as its JSON after the record's own, in the order listed
    skeleton, *bodies = line[9:].split(RAW_SEPARATOR)
    record = json.loads(skeleton)
    assert all(d["resource"] is None for d in record["tables"][HISTORY].values())
    assert [name for name, _ in record[RAW]] == [HISTORY] * 10
    assert [json.loads(b) for b in bodies] == [written[key.split("/")[0]] for _, key in record[RAW]]
    store._journal.close()  # a crash: no compaction, the journal is replayed at open
    assert not (folder / "snapshot.json").exists()
    reopened = EmbeddedStore(folder, fsync=False)
    try:
        assert all(isinstance(d["resource"], bytes) for d in reopened._mem[HISTORY].values())
        _all_ways(reopened, written)
    finally:
        reopened.close()


def test_restart_from_the_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    written = _write(store, _events(10))
    store.close()  # compacts: everything in the snapshot
    assert (folder / "journal.log").stat().st_size == 0
    snapshot = json.loads((folder / "snapshot.json").read_bytes())
    assert {k.split("/")[0]: d["resource"] for k, d in snapshot[HISTORY].items()} == written
    reopened = EmbeddedStore(folder, fsync=False)
    try:
        assert all(isinstance(d["resource"], bytes) for d in reopened._mem[HISTORY].values())
        _all_ways(reopened, written)
        written |= _write(reopened, _events(3))  # a journal on top of the snapshot
    finally:
        reopened.close()
    again = EmbeddedStore(folder, fsync=False)
    try:
        _all_ways(again, written)
    finally:
        again.close()


def test_update_delete_and_history_of_a_packed_event(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "d", fsync=False)
    try:
        (rid,) = _write(store, _events(1))
        first = store.read("AuditEvent", rid)
        same = store.commit([WriteOp("update", "AuditEvent", id=rid, resource=first)])[0]
        assert same.version_id == "1"  # unchanged content: no new version
        changed = {**first, "outcome": "4"}
        assert (
            store.commit([WriteOp("update", "AuditEvent", id=rid, resource=changed)])[0].version_id
            == "2"
        )
        assert store.read("AuditEvent", rid)["outcome"] == "4"
        assert store.vread("AuditEvent", rid, "1") == first
        store.commit([WriteOp("delete", "AuditEvent", id=rid)])
        entries = store.history("AuditEvent", rid)
        assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
        assert entries[1]["resource"]["outcome"] == "4"
        assert "resource" not in entries[0]
        assert store.search("AuditEvent", []) == []
    finally:
        store.close()


def test_an_event_orjson_cannot_encode_stays_exact(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    event = _events(1)[0]
    big = 123456789012345678901234567890  # beyond 64 bits: kept unpacked, exactly
    event["extension"] = [{"url": "urn:x", "valueDecimal": big}]
    (rid,) = _write(store, [event])
    got = store.read("AuditEvent", rid)
    assert got["extension"][0]["valueDecimal"] == big
    got["extension"][0]["valueDecimal"] = 1
    assert store.search("AuditEvent", [])[0]["extension"][0]["valueDecimal"] == big
    store.close()
    reopened = EmbeddedStore(folder, fsync=False)
    try:
        assert reopened.read("AuditEvent", rid)["extension"][0]["valueDecimal"] == big
    finally:
        reopened.close()


def test_other_types_are_not_packed_unless_asked(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "d", fsync=False)
    try:
        store.commit([WriteOp("update", "Patient", id="p1", resource={"active": True})])
        assert isinstance(store._mem["Patient._history"]["p1/1"]["resource"], dict)
    finally:
        store.close()
    packed = EmbeddedStore(tmp_path / "e", fsync=False, packed={"Patient"})
    try:
        packed.commit([WriteOp("update", "Patient", id="p1", resource={"active": True})])
        assert isinstance(packed._mem["Patient._history"]["p1/1"]["resource"], bytes)
        assert packed.search("Patient", [("active", "true")])[0]["active"] is True
    finally:
        packed.close()


def test_new_ids_are_valid_fhir_ids_and_uuids() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    fhir_id = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
    # FHIR R4 uuid datatype (urn:uuid: fullUrls are built from these ids)
    fhir_uuid = re.compile(
        r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )
    assert all(fhir_id.match(i) and fhir_uuid.match(f"urn:uuid:{i}") for i in ids)


def test_a_store_that_does_not_pack_the_type_replays_its_packed_events(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    written = _write(store, _events(4))
    store._journal.close()  # a crash: the journal is replayed at open
    unpacked = EmbeddedStore(folder, fsync=False, packed=())
    try:
        assert all(isinstance(d["resource"], dict) for d in unpacked._mem[HISTORY].values())
        _all_ways(unpacked, written)
    finally:
        unpacked.close()
