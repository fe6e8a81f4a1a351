"""The journal and the snapshot are read with orjson only where orjson wrote them (a marked
record, a snapshot line without a leading space): an integer beyond 64 bits, and files
written before (one-line snapshots, unmarked records), are read exactly; the mark never
reaches the tables."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore
from fhircare.store.journal import MARK

BIG = 10**30  # a decimal beyond 64 bits: orjson cannot write it, and would read it as a float


def _patient(pid: str, value: int) -> WriteOp:
    body = {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueDecimal": value}]}
    return WriteOp("update", "Patient", id=pid, resource=body)


def _value(store: EmbeddedStore, pid: str) -> int:
    return store.read("Patient", pid)["extension"][0]["valueDecimal"]


def test_journal_and_snapshot_keep_big_integers_and_drop_the_mark(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    store.commit([_patient("small", 7)])
    store.commit([_patient("big", BIG)])
    lines = (folder / "journal.log").read_bytes().splitlines()
    assert json.loads(lines[0][9:])[MARK] is True  # orjson wrote it
    assert MARK not in json.loads(lines[1][9:])  # the standard library did
    store._journal.close()  # a crash: the journal is replayed
    replayed = EmbeddedStore(folder, fsync=False)
    assert _value(replayed, "big") == BIG and isinstance(_value(replayed, "big"), int)
    assert _value(replayed, "small") == 7
    assert replayed.get_meta(MARK) is None
    replayed.close()  # the snapshot: one document a line, the big one by the standard library
    text = (folder / "snapshot.json").read_bytes()
    lines = text.splitlines()
    assert json.loads(text)["Patient._history"]["big/1"]["resource"]["extension"][0] == {
        "url": "urn:x",
        "valueDecimal": BIG,
    }
    assert [line[:6] for line in lines if b'"big/1"' in line] == [b' "big/']
    assert sum(1 for line in lines if line.startswith(b'"small')) == 2  # current, version
    again = EmbeddedStore(folder, fsync=False)
    try:
        assert _value(again, "big") == BIG and isinstance(_value(again, "big"), int)
    finally:
        again.close()


def test_files_written_before_the_layout_and_the_mark_load(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    store = EmbeddedStore(folder, fsync=False)
    store.commit([_patient("p1", 1)])
    store.close()
    snapshot = json.loads((folder / "snapshot.json").read_bytes())
    (folder / "snapshot.json").write_text(json.dumps(snapshot))  # one line, as before
    doc = {"id": "p2", "vid": "1", "lu": "2026-12-03T00:00:00.000Z", "deleted": False, "seq": 9}
    version = doc | {"origin": "local", "method": "create"}
    version["resource"] = {"resourceType": "Patient", "id": "p2", "active": True}
    record = {"seq": 9, "tables": {"Patient": {"p2": doc}, "Patient._history": {"p2/1": version}}}
    body = json.dumps(record, separators=(",", ":")).encode()
    (folder / "journal.log").write_bytes(b"%08x " % zlib.crc32(body) + body + b"\n")
    reopened = EmbeddedStore(folder, fsync=False)
    try:
        assert _value(reopened, "p1") == 1
        assert reopened.read("Patient", "p2")["active"] is True
    finally:
        reopened.close()
