"""The embedded store: TinyDB tables in memory, made durable by a journal and snapshots.

Tables (TinyDB, string document ids):
* `<Type>`: the current version of each resource, keyed by id
  (`{"id", "vid", "lu", "deleted", "seq"}`);
* `<Type>._history`: every version, keyed by `id/vid`, with the resource body;
* `_meta`: small durable values (sync watermarks, processed events, the last seq).

Every commit is prepared in full (checks included), appended to the journal and fsynced,
and only then applied to the TinyDB tables: a failed commit changes nothing, and an
acknowledged one survives a kill -9 (see `journal.py`). Commits are applied to the tables'
documents directly, by the same code that replays the journal, instead of through TinyDB's
write path, which rebuilds a whole table per operation. The snapshot is a plain TinyDB JSON
database. A reference index ("Patient/x" -> ids, per type) narrows reference searches.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import MemoryStorage
from tinydb.table import Table

from fhircare.fhir.errors import Conflict, Gone, NotFound, PreconditionFailed
from fhircare.fhir.meta import without_server_meta
from fhircare.fhir.references import iter_references, parse_local
from fhircare.fhir.search import Criterion, matches, parse_query, sort_resources
from fhircare.store.base import Change, WriteOp, WriteResult
from fhircare.store.journal import Journal, apply_record

META = "_meta"
HISTORY = "._history"
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024


class KeyedTable(Table):
    """A TinyDB table whose document ids are strings chosen by us."""

    document_id_class = str  # type: ignore[assignment]


class KeyedTinyDB(TinyDB):
    table_class = KeyedTable


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EmbeddedStore:
    """A durable single-process FHIR store on TinyDB."""

    def __init__(
        self,
        folder: Path | str,
        *,
        fsync: bool = True,
        compact_bytes: int = DEFAULT_COMPACT_BYTES,
    ) -> None:
        self.folder = Path(folder)
        self._journal = Journal(self.folder, fsync=fsync)
        tables, self._seq = self._journal.load()
        self._db = KeyedTinyDB(storage=MemoryStorage)
        self._db.storage.memory = tables  # type: ignore[attr-defined]
        self._mem = tables
        self._lock = threading.RLock()
        # type -> "Type/id" referenced -> ids of live resources holding that reference
        self._refs: dict[str, dict[str, set[str]]] = {}
        for name in list(tables):
            if not name.endswith(HISTORY) and name != META:
                for rid, cur in tables[name].items():
                    if not cur["deleted"]:
                        self._index(name, rid, self._body(name, cur))
        self._compact_bytes = compact_bytes
        self._last_instant = datetime.now(UTC) - timedelta(days=1)
        self._closed = False

    # ---- time and ids ---------------------------------------------------------------------

    def _now(self) -> datetime:
        """A strictly increasing timestamp at millisecond precision."""
        now = datetime.now(UTC).replace(microsecond=(datetime.now(UTC).microsecond // 1000) * 1000)
        if now <= self._last_instant:
            now = self._last_instant + timedelta(milliseconds=1)
        self._last_instant = now
        return now

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    # ---- reads ------------------------------------------------------------------------------

    def _table(self, name: str) -> Table:
        return self._db.table(name)

    def _current(self, resource_type: str, id: str) -> dict[str, Any] | None:
        return self._table(resource_type).get(doc_id=id)  # type: ignore[return-value]

    def _version_doc(self, resource_type: str, id: str, vid: str) -> dict[str, Any] | None:
        return self._table(resource_type + HISTORY).get(doc_id=f"{id}/{vid}")  # type: ignore

    def read(self, resource_type: str, id: str) -> dict[str, Any]:
        with self._lock:
            cur = self._current(resource_type, id)
            if cur is None:
                raise NotFound(f"Resource {resource_type}/{id} is not known")
            if cur["deleted"]:
                raise Gone(f"Resource {resource_type}/{id} was deleted (version {cur['vid']})")
            doc = self._version_doc(resource_type, id, cur["vid"])
            assert doc is not None
            return copy.deepcopy(doc["resource"])

    def vread(self, resource_type: str, id: str, version_id: str) -> dict[str, Any]:
        with self._lock:
            doc = self._version_doc(resource_type, id, version_id)
            if doc is None:
                raise NotFound(f"Version {version_id} of {resource_type}/{id} is not known")
            if doc["deleted"]:
                raise Gone(f"Version {version_id} of {resource_type}/{id} is a deletion")
            return copy.deepcopy(doc["resource"])

    def exists(self, resource_type: str, id: str) -> bool:
        with self._lock:
            cur = self._current(resource_type, id)
            return cur is not None and not cur["deleted"]

    def current_version(self, resource_type: str, id: str) -> str | None:
        with self._lock:
            cur = self._current(resource_type, id)
            return None if cur is None else cur["vid"]

    def resource_types(self) -> list[str]:
        with self._lock:
            return sorted(n for n in self._db.tables() if not n.endswith(HISTORY) and n != META)

    def _body(self, resource_type: str, cur: dict[str, Any]) -> dict[str, Any]:
        return self._mem[resource_type + HISTORY][f"{cur['id']}/{cur['vid']}"]["resource"]

    def _index(
        self, resource_type: str, rid: str, resource: dict[str, Any] | None, remove: bool = False
    ) -> None:
        if resource is None:
            return
        index = self._refs.setdefault(resource_type, {})
        for _, ref in iter_references(resource):
            local = parse_local(ref["reference"])
            if local is None:
                continue
            key = f"{local[0]}/{local[1]}"
            if remove:
                index.get(key, set()).discard(rid)
            else:
                index.setdefault(key, set()).add(rid)

    def _live(
        self, resource_type: str, ids: Iterable[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Live resources of a type (raw, not copied), optionally only the given ids."""
        current = self._mem.get(resource_type, {})
        curs = current.values() if ids is None else (current[i] for i in ids if i in current)
        for cur in curs:
            if not cur["deleted"]:
                yield self._body(resource_type, cur)

    def _candidates(self, resource_type: str, criteria: list[Criterion]) -> set[str] | None:
        """Ids that can match, from the reference index; None when no criterion narrows."""
        best: set[str] | None = None
        for crit in criteria:
            if crit.definition.kind != "reference" or crit.modifier:
                continue
            if not all("/" in alt for alt in crit.alternatives):
                continue
            index = self._refs.get(resource_type, {})
            found: set[str] = set()
            for alt in crit.alternatives:
                local = parse_local(alt)
                if local is None:
                    break
                found |= index.get(f"{local[0]}/{local[1]}", set())
            else:
                best = found if best is None else best & found
        return best

    def iter_resources(self, resource_type: str) -> Iterator[dict[str, Any]]:
        with self._lock:
            items = [copy.deepcopy(r) for r in self._live(resource_type)]
        yield from items

    def count(self, resource_type: str) -> int:
        with self._lock:
            return sum(1 for cur in self._mem.get(resource_type, {}).values() if not cur["deleted"])

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        criteria, sort = parse_query(resource_type, params)
        with self._lock:
            ids = self._candidates(resource_type, criteria)
            found = [
                copy.deepcopy(r) for r in self._live(resource_type, ids) if matches(r, criteria)
            ]
        return sort_resources(found, sort) if sort else found

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            if resource_type and id:
                cur = self._current(resource_type, id)
                if cur is None:
                    raise NotFound(f"Resource {resource_type}/{id} is not known")
                docs = [
                    self._version_doc(resource_type, id, str(v))
                    for v in range(int(cur["vid"]), 0, -1)
                ]
                pairs = [(resource_type, d) for d in docs if d is not None]
            else:
                types = [resource_type] if resource_type else self.resource_types()
                pairs = [(t, d) for t in types for d in self._table(t + HISTORY)]
                pairs.sort(key=lambda p: p[1]["seq"], reverse=True)
            if since:
                pairs = [p for p in pairs if p[1]["lu"] >= since]
            return [self._history_entry(t, d) for t, d in pairs]

    @staticmethod
    def _history_entry(resource_type: str, doc: dict[str, Any]) -> dict[str, Any]:
        url = f"{resource_type}/{doc['id']}"
        method = {"create": "POST", "update": "PUT", "delete": "DELETE"}[doc["method"]]
        entry: dict[str, Any] = {
            "fullUrl": url,
            "request": {"method": method, "url": resource_type if method == "POST" else url},
            "response": {
                "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[
                    method
                ],
                "etag": f'W/"{doc["vid"]}"',
                "lastModified": doc["lu"],
            },
        }
        if not doc["deleted"]:
            entry["resource"] = copy.deepcopy(doc["resource"])
        return entry

    def changes(self, after_seq: int, limit: int | None = None) -> list[Change]:
        with self._lock:
            out = [
                Change(
                    seq=d["seq"],
                    resource_type=t[: -len(HISTORY)],
                    id=d["id"],
                    version_id=d["vid"],
                    deleted=d["deleted"],
                    origin=d["origin"],
                    last_updated=d["lu"],
                    resource=None if d["deleted"] else copy.deepcopy(d["resource"]),
                )
                for t in self._db.tables()
                if t.endswith(HISTORY)
                for d in self._table(t)
                if d["seq"] > after_seq
            ]
        out.sort(key=lambda c: c.seq)
        return out[:limit] if limit is not None else out

    @property
    def last_seq(self) -> int:
        return self._seq

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            doc = self._table(META).get(doc_id=key)
            return default if doc is None else copy.deepcopy(doc["value"])

    # ---- writes -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self.set_meta_many({key: value})

    def set_meta_many(self, values: dict[str, Any]) -> None:
        """Set several durable values in one commit."""
        with self._lock:
            docs = {k: {"id": k, "value": copy.deepcopy(v)} for k, v in values.items()}
            self._write({META: docs}, self._seq)

    def commit(self, ops: list[WriteOp], meta: dict[str, Any] | None = None) -> list[WriteResult]:
        """Apply every op or none, durably; `meta` values are written in the same commit."""
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            now = _instant(self._now())
            seq = self._seq
            pending: dict[tuple[str, str], dict[str, Any]] = {}  # overlay of current docs
            tables: dict[str, dict[str, Any]] = {}
            results: list[WriteResult] = []
            for op in ops:
                result, cur_doc, version_doc = self._prepare(op, pending, now, seq + 1)
                if version_doc is None:  # no-op: delete of an absent resource, unchanged update
                    results.append(result)
                    continue
                seq += 1
                key = (op.resource_type, result.id)
                pending[key] = cur_doc
                tables.setdefault(op.resource_type, {})[result.id] = cur_doc
                tables.setdefault(op.resource_type + HISTORY, {})[
                    f"{result.id}/{result.version_id}"
                ] = version_doc
                results.append(result)
            if meta:
                tables.setdefault(META, {}).update(
                    {k: {"id": k, "value": copy.deepcopy(v)} for k, v in meta.items()}
                )
            if tables:
                self._write(tables, seq)
            return results

    def _prepare(
        self,
        op: WriteOp,
        pending: dict[tuple[str, str], dict[str, Any]],
        now: str,
        seq: int,
    ) -> tuple[WriteResult, dict[str, Any], dict[str, Any] | None]:
        rtype = op.resource_type
        if op.method == "create":
            rid = op.id if (op.keep_id and op.id) else self.new_id()
        else:
            if not op.id:
                raise ValueError(f"{op.method} needs an id")
            rid = op.id
        cur = pending.get((rtype, rid)) or self._current(rtype, rid)
        if op.method == "create" and cur is not None:
            raise Conflict(f"Resource {rtype}/{rid} already exists")
        if op.if_match is not None:
            if cur is None or cur["deleted"]:
                raise PreconditionFailed(
                    f"If-Match {op.if_match}: {rtype}/{rid} has no current version"
                )
            if cur["vid"] != op.if_match:
                raise PreconditionFailed(
                    f"If-Match version {op.if_match} does not match the current version "
                    f"{cur['vid']} of {rtype}/{rid}"
                )
        if op.method == "update" and cur and not cur["deleted"] and op.resource is not None:
            current = self._body(rtype, cur) if (rtype, rid) not in pending else None
            if current is not None and _same_content(current, op.resource):
                # A no-op update keeps the version, as HAPI does (nothing to sync either).
                result = WriteResult(
                    rtype, rid, cur["vid"], cur["lu"], resource=copy.deepcopy(current)
                )
                return result, cur, None
        vid = str(int(cur["vid"]) + 1) if cur else "1"
        deleted = op.method == "delete"
        if deleted and (cur is None or cur["deleted"]):
            result = WriteResult(rtype, rid, cur["vid"] if cur else "0", now, deleted=True)
            return result, cur or {}, None
        resource = None
        if not deleted:
            assert op.resource is not None
            resource = copy.deepcopy(op.resource)
            resource["resourceType"] = rtype
            resource["id"] = rid
            meta = dict(resource.get("meta") or {})
            meta["versionId"] = vid
            meta["lastUpdated"] = now
            resource["meta"] = meta
        cur_doc = {"id": rid, "vid": vid, "lu": now, "deleted": deleted, "seq": seq}
        version_doc = {
            "id": rid,
            "vid": vid,
            "lu": now,
            "deleted": deleted,
            "seq": seq,
            "origin": op.origin,
            "method": op.method,
            "resource": resource,
        }
        result = WriteResult(
            rtype,
            rid,
            vid,
            now,
            created=cur is None or bool(cur.get("deleted")),
            deleted=deleted,
            resource=copy.deepcopy(resource),
        )
        return result, cur_doc, version_doc

    def _write(self, tables: dict[str, dict[str, Any]], seq: int) -> None:
        """Journal (durable), then apply to TinyDB; compact when the journal is large."""
        meta = tables.setdefault(META, {})
        meta["_store"] = {"id": "_store", "value": {"seq": seq}}
        record = {"seq": seq, "tables": tables}
        self._journal.append(record)
        for name, docs in tables.items():
            if name.endswith(HISTORY) or name == META:
                continue
            for rid in docs:  # drop the old version from the reference index
                old = self._mem.get(name, {}).get(rid)
                if old is not None and not old["deleted"]:
                    self._index(name, rid, self._body(name, old), remove=True)
        apply_record(self._mem, record)
        for name, docs in tables.items():
            self._table(name).clear_cache()
            if name.endswith(HISTORY) or name == META:
                continue
            for rid, cur in docs.items():
                if not cur["deleted"]:
                    self._index(name, rid, self._body(name, cur))
        self._seq = seq
        if self._journal.journal_bytes > self._compact_bytes:
            self.compact()

    def compact(self) -> None:
        """Write a snapshot of every table and empty the journal."""
        with self._lock:
            self._journal.write_snapshot(self._db.storage.memory)  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._journal.journal_bytes:
                self.compact()
            self._journal.close()
            self._closed = True


def _same_content(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when `new` equals the stored version but for server-kept meta elements."""

    def strip(resource: dict[str, Any]) -> dict[str, Any]:
        body = without_server_meta(resource)
        body.pop("id", None)
        body.pop("resourceType", None)
        return body

    return strip(current) == strip(new)
